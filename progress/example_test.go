package progress_test

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/progress"
)

const mib = 1 << 20

func layer(name string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayer,
		Digest:    digest.FromString(name),
		Size:      size,
	}
}

func ExampleFunc() {
	var obs progress.Observer = progress.Func(func(e progress.Event) {
		if e.Kind == progress.Retrying {
			fmt.Printf("attempt %d failed (%s), retrying in %s\n", e.Attempt, e.Reason, e.Backoff)
		}
	})

	obs.OnEvent(progress.Event{Kind: progress.Started, Desc: layer("weights", 64*mib), Attempt: 1})
	obs.OnEvent(progress.Event{Kind: progress.Retrying, Desc: layer("weights", 64*mib), Attempt: 1,
		Reason: "HTTP 503", Backoff: 5 * time.Second})
	// Output:
	// attempt 1 failed (HTTP 503), retrying in 5s
}

func ExampleMulti() {
	tracker := progress.NewTracker()
	printer := progress.Func(func(e progress.Event) { fmt.Println(e.Kind, e.Offset) })
	var quiet progress.Observer // nil observers are skipped

	obs := progress.Multi(printer, quiet, tracker)

	desc := layer("weights", 8*mib)
	obs.OnEvent(progress.Event{Kind: progress.Started, Desc: desc, Attempt: 1})
	obs.OnEvent(progress.Event{Kind: progress.Progressed, Desc: desc, Attempt: 1, Offset: 4 * mib})

	s := tracker.Snapshot()
	fmt.Printf("tracker: %d of %d bytes\n", s.Done, s.Total)
	// Output:
	// started 0
	// progressed 4194304
	// tracker: 4194304 of 8388608 bytes
}

func ExampleLog() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // keep the output reproducible
			}
			return a
		},
	}))
	obs := progress.Log(logger)

	desc := layer("weights", 64*mib)
	obs.OnEvent(progress.Event{Kind: progress.Started, Desc: desc, Attempt: 1})
	obs.OnEvent(progress.Event{Kind: progress.Progressed, Desc: desc, Attempt: 1, Offset: 16 * mib}) // not logged
	obs.OnEvent(progress.Event{Kind: progress.Retrying, Desc: desc, Attempt: 1, Offset: 16 * mib,
		Reason: "connection reset", Backoff: 5 * time.Second, Err: syscall.ECONNRESET})
	obs.OnEvent(progress.Event{Kind: progress.Resumed, Desc: desc, Attempt: 2, Offset: 16 * mib})
	obs.OnEvent(progress.Event{Kind: progress.Completed, Desc: desc, Attempt: 2, Offset: 64 * mib, Wire: 66 * mib})
	// Output:
	// level=DEBUG msg="blob started" digest=sha256:9a129038d9a0 size=67108864 attempt=1
	// level=WARN msg="blob retrying" digest=sha256:9a129038d9a0 size=67108864 attempt=1 reason="connection reset" backoff=5s offset=16777216 err="connection reset by peer"
	// level=INFO msg="blob resumed" digest=sha256:9a129038d9a0 size=67108864 attempt=2 offset=16777216
	// level=DEBUG msg="blob completed" digest=sha256:9a129038d9a0 size=67108864 attempt=2 wire=69206016
}

func ExampleTracker() {
	tracker := progress.NewTracker()
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	weights := layer("weights", 1<<30)
	config := layer("config", 2*mib)
	tokenizer := layer("tokenizer", 8*mib)
	adapter := layer("adapter", 10*mib)
	for _, e := range []progress.Event{
		{Kind: progress.Skipped, Desc: config, Reason: "exists", Time: at(0)},
		{Kind: progress.Mounted, Desc: tokenizer, Reason: "from repo models/base", Time: at(0)},
		{Kind: progress.Started, Desc: adapter, Attempt: 1, Time: at(0)},
		{Kind: progress.Failed, Desc: adapter, Attempt: 1, Reason: "HTTP 403", Time: at(time.Second)},

		{Kind: progress.Started, Desc: weights, Attempt: 1, Time: at(0)},
		{Kind: progress.Note, Desc: weights, Reason: "registry refused chunked upload; falling back to monolithic", Time: at(0)},
		{Kind: progress.Progressed, Desc: weights, Attempt: 1, Offset: 256 * mib, Wire: 256 * mib, Time: at(10 * time.Second)},
		{Kind: progress.Retrying, Desc: weights, Attempt: 1, Offset: 256 * mib, Wire: 260 * mib,
			Reason: "connection reset", Backoff: 5 * time.Second, Time: at(11 * time.Second)},
		// Monolithic uploads cannot resume: attempt 2 starts from 0.
		{Kind: progress.Progressed, Desc: weights, Attempt: 2, Offset: 512 * mib, Wire: 772 * mib, Time: at(36 * time.Second)},
		{Kind: progress.Completed, Desc: weights, Attempt: 2, Offset: 1 << 30, Wire: 1284 * mib, Time: at(56 * time.Second)},
	} {
		tracker.OnEvent(e)
	}

	for _, b := range tracker.Snapshot().Blobs {
		fmt.Printf("%-8s %d/%d attempts=%d %s\n", b.State, b.Offset, b.Desc.Size, b.Attempts, b.Reason)
	}
	fmt.Println()
	fmt.Println(tracker.Summary())
	// Output:
	// skipped  2097152/2097152 attempts=0 exists
	// mounted  8388608/8388608 attempts=0 from repo models/base
	// failed   0/10485760 attempts=1 HTTP 403
	// done     1073741824/1073741824 attempts=2 connection reset
	//
	// blobs    4 total, manifests and configs included: 1 completed, 1 skipped, 1 mounted, 1 failed
	// bytes    1.0 GiB payload, 1.3 GiB on the wire (1.25x)
	// retries  1 (waited 5s), 0 resumed
	// time     56s, 18.3 MiB/s average
	// failed   sha256:ae1eae1d76e5b7c865c4122ce366a08025842566d2d96c75cc13e6353a73db0d (10.0 MiB): HTTP 403
	// note     registry refused chunked upload; falling back to monolithic
}

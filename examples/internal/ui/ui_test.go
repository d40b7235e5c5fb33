package ui

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/vbauerster/mpb/v8"
	"go.uber.org/goleak"

	"github.com/sturdyoci/sturdy/progress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1234": 1234, "1GiB": 1 << 30, "1G": 1 << 30, "256MiB": 256 << 20,
		"256 MiB": 256 << 20, "24m": 24 << 20, "1.5GiB": 3 << 29, "10KB": 10000, "1gb": 1e9, "7b": 7,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "1XB", "-1", "1.2.3G", "99999999999TiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestLabel(t *testing.T) {
	d := digest.FromString("x")
	for _, c := range []struct {
		desc ocispec.Descriptor
		want string
	}{
		{ocispec.Descriptor{Digest: d, Annotations: map[string]string{ocispec.AnnotationTitle: "a.bin"}}, "a.bin"},
		{ocispec.Descriptor{Digest: d, MediaType: ocispec.MediaTypeImageManifest}, "manifest " + d.Encoded()[:12]},
		{ocispec.Descriptor{Digest: d, MediaType: ocispec.MediaTypeEmptyJSON}, "config " + d.Encoded()[:12]},
		{ocispec.Descriptor{Digest: d, MediaType: "application/octet-stream"}, "blob " + d.Encoded()[:12]},
	} {
		if got := Label(c.desc); got != c.want {
			t.Errorf("Label(%v) = %q, want %q", c.desc.MediaType, got, c.want)
		}
	}
}

func blobDesc(name string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:   "application/octet-stream",
		Digest:      digest.FromString(name),
		Size:        size,
		Annotations: map[string]string{ocispec.AnnotationTitle: name},
	}
}

func TestLines(t *testing.T) {
	var buf bytes.Buffer
	l := NewLines(&buf, "push")
	d := blobDesc("model.safetensors", 64<<20)
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, e := range []progress.Event{
		{Kind: progress.Started, Desc: d, Attempt: 1, Time: at(0)},
		{Kind: progress.Progressed, Desc: d, Offset: 1 << 20, Time: at(0.1)},
		{Kind: progress.Retrying, Desc: d, Attempt: 1, Offset: 32 << 20, Reason: "connection reset", Backoff: 200 * time.Millisecond, Time: at(0.5)},
		{Kind: progress.Resumed, Desc: d, Attempt: 2, Offset: 32 << 20, Time: at(0.7)},
		{Kind: progress.Completed, Desc: d, Attempt: 2, Offset: 64 << 20, Wire: 65 << 20, Time: at(1)},
		{Kind: progress.Note, Reason: "hello", Time: at(1)},
	} {
		l.OnEvent(e)
	}
	l.Close()
	got := buf.String()
	for _, want := range []string{
		"    0.0s push  started    model.safetensors                  64.0 MiB\n",
		"    0.5s push  retrying   model.safetensors                  attempt 1 failed at 32.0 MiB: connection reset; waiting 200ms\n",
		"    0.7s push  resumed    model.safetensors                  at 32.0 MiB of 64.0 MiB\n",
		"    1.0s push  completed  model.safetensors                  64.0 MiB in 1s (64.0 MiB/s), 1 retry, 1 resumed, wire 1.02x\n",
		"    1.0s push  note       -                                  hello\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing line %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "progressed") {
		t.Errorf("Progressed must not print a line:\n%s", got)
	}
}

// TestBarsConcurrent drives bars from many goroutines while mpb renders
// them: under -race it proves that decorators and OnEvent share no
// unguarded state, and goleak that Close stops mpb's goroutines.
func TestBarsConcurrent(t *testing.T) {
	var out syncBuffer
	d := NewBars(&out, "pull", mpb.WithAutoRefresh(), mpb.WithRefreshRate(time.Millisecond), mpb.WithWidth(120))
	var wg sync.WaitGroup
	for i := range 8 {
		desc := blobDesc(fmt.Sprintf("shard-%d", i), 8<<20)
		wg.Go(func() {
			d.OnEvent(progress.Event{Kind: progress.Started, Desc: desc})
			for off := int64(0); off < desc.Size; off += 256 << 10 {
				d.OnEvent(progress.Event{Kind: progress.Progressed, Desc: desc, Offset: off})
				if off%(2<<20) == 0 {
					d.OnEvent(progress.Event{Kind: progress.Retrying, Desc: desc, Attempt: 1, Offset: off,
						Reason: "connection reset", Backoff: time.Millisecond, Err: errors.New("reset")})
					d.OnEvent(progress.Event{Kind: progress.Resumed, Desc: desc, Attempt: 2, Offset: off})
				}
				time.Sleep(50 * time.Microsecond)
			}
			switch i {
			case 6:
				d.OnEvent(progress.Event{Kind: progress.Failed, Desc: desc, Reason: "HTTP 403"})
			case 7: // left unfinished: Close must abort it
			default:
				d.OnEvent(progress.Event{Kind: progress.Completed, Desc: desc, Offset: desc.Size})
			}
		})
	}
	d.OnEvent(progress.Event{Kind: progress.Note, Reason: "a note above the bars"})
	wg.Wait()
	d.Close()
	got := out.String()
	for _, want := range []string{"shard-0", "done (4 retries, last: connection reset)", "failed: HTTP 403", "unfinished", "a note above the bars"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestBarText(t *testing.T) {
	now := time.Now()
	s := barState{state: "active"}
	if got := s.text(now); got != "active" {
		t.Errorf("got %q", got)
	}
	s.retries, s.attempt, s.reason, s.retryUntil = 2, 2, "connection reset", now.Add(1200*time.Millisecond)
	if got := s.text(now); got != "retry 2: connection reset, waiting 1.2s" {
		t.Errorf("got %q", got)
	}
	s.state, s.retryUntil = "resumed at 64.0 MiB", time.Time{}
	if got := s.text(now); got != "resumed at 64.0 MiB | last retry: connection reset" {
		t.Errorf("got %q", got)
	}
}

// syncBuffer is a bytes.Buffer safe for mpb's writer and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)

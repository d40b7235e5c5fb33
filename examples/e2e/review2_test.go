package e2e

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// BlobError.Origin's doc: OriginSource is also a source that "served
// content that does not match its descriptor", and originOf says "A digest
// mismatch found by the destination is still the source's content". A
// registry-to-registry copy whose source serves a flipped byte on every
// GET, for a blob under 1 MiB (or any blob with Monolithic, or to a
// registry without chunked uploads): the push does not hash locally, the
// destination registry answers DIGEST_INVALID, and the blob fails with
// Origin destination -- the side that did nothing wrong.
func TestReview2DigestInvalidFromRegistryIsTheSourcesFault(t *testing.T) {
	regA, regB := registrytest.New(t), registrytest.New(t)
	a := newArtifact(t, 256<<10)
	src := seed(t, regA, "origin-corrupt", a)
	regA.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Action: registrytest.Corrupt(1000)})
	_, err := transfer.Copy(context.Background(), src, "v1", repo(t, regB, "origin-corrupt"), "", transfer.Options{Retry: fast(2)})
	bes := transfer.BlobErrors(err)
	if len(bes) != 1 || bes[0].Desc.Digest != a.layers[0].Digest {
		t.Fatalf("BlobErrors = %v (err %v)", bes, err)
	}
	if bes[0].Origin != transfer.OriginSource {
		t.Fatalf("the source served a corrupted blob; Origin = %s: %v", bes[0].Origin, bes[0])
	}
}

// Config.Classify is "asked about every failed attempt's error". sturdy
// drives a declined cross-repository mount through the retry loop with an
// unexported sentinel (errNoMountFallback) that is not marked Permanent, so
// a caller's classifier in go-retryablehttp's style (retry any error that
// is not a 4xx answer) retries every declined mount MaxAttempts times,
// with backoffs, opening an upload session each time -- for every blob, in
// Copy and in Wrap's Mount alike. The caller cannot even name the error to
// exclude it.
func TestReview2ClassifierRetriesDeclinedMounts(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 3000)
	var mu sync.Mutex
	var mounts int
	opts := transfer.Options{Retry: fast(3), MountFrom: []string{"has/nothing"}}
	opts.Retry.Classify = func(err error) (retrypolicy.Verdict, bool) {
		var se *retrypolicy.StatusError
		if errors.As(err, &se) && se.StatusCode/100 == 4 {
			return retrypolicy.Verdict{Retryable: false, Reason: "client error"}, true
		}
		return retrypolicy.Verdict{Retryable: true, Reason: "other"}, true
	}
	opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) {
		if ri.Op == "mount" {
			mu.Lock()
			mounts++
			mu.Unlock()
		}
	}
	if _, err := transfer.Copy(context.Background(), a.store, "v1", repo(t, reg, "classify-mount"), "", opts); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if mounts != 0 {
		t.Fatalf("%d retries of declined mounts (a decline is not a failure)", mounts)
	}
}

// Wrap's doc: "Invalid opts (see Options.Validate) make every operation
// fail with their error." The Wrap of a *remote.Repository passes Tags,
// Referrers and ParseReference through without looking at them, so a
// pipeline with a typo in its Options lists tags (and referrers) as if
// nothing were wrong, and only fails later on a Fetch.
func TestReview2WrapInvalidOptionsFailEveryOperation(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 100)
	r := seed(t, reg, "invalid-opts", a)
	w := transfer.Wrap(r, transfer.Options{Concurrency: -1})
	if _, err := w.Resolve(context.Background(), "v1"); !errors.Is(err, transfer.ErrInvalidOptions) {
		t.Fatalf("Resolve: %v", err)
	}
	err := w.(registry.TagLister).Tags(context.Background(), "", func([]string) error { return nil })
	if !errors.Is(err, transfer.ErrInvalidOptions) {
		t.Fatalf("Tags with invalid Options: err = %v, want ErrInvalidOptions", err)
	}
}

// Options.StallTimeout "bounds the silence of every request to a
// registry". Copy given a target that was Wrap'd (an oras pipeline's
// targets reused for a transfer.Copy) unwraps it to the Wrap's rewired
// repository, and rewire keeps a client that is already a registryClient:
// the Wrap's StallTimeout (here the default, 1 min) watches Copy's
// requests, not Copy's own 300 ms. A manifest GET that goes silent holds
// the Copy for the Wrap's timeout.
func TestReview2CopyOfWrappedRepositoryIgnoresItsStallTimeout(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1000)
	src := seed(t, reg, "wrapped-stall", a)
	f := reg.Inject(registrytest.Rule{Kind: registrytest.ManifestGet, Times: 1, Action: registrytest.Stall(0)})
	defer f.Remove()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := transfer.Copy(ctx, transfer.Wrap(src, transfer.Options{}), "v1", newLayout(t), "",
		transfer.Options{Retry: fast(3), StallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("after %s: %v (Copy's StallTimeout is 300ms)", time.Since(start).Round(time.Millisecond), err)
	}
}

// Options.Logger "logs retries, resumes and failures", and the issue this
// closes: "a 1 s Retry-After on a manifest GET never shows in the Tracker
// or the log. Report them." A rate-limited tag resolution (the first
// request of every Copy, and the one Docker Hub counts) is reported to
// OnRetry only: it is no event, so Options.Logger never logs it.
func TestReview2LoggerLogsRetriedResolve(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1000)
	src := seed(t, reg, "log-resolve", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.ManifestGet, Times: 1, Action: registrytest.Respond(http.StatusTooManyRequests)})
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	opts := transfer.Options{Retry: fast(3), Logger: logger}
	var ops []string
	opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) {
		mu.Lock()
		ops = append(ops, ri.Op)
		mu.Unlock()
	}
	if _, err := transfer.Copy(context.Background(), src, "v1", newLayout(t), "", opts); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ops) != 1 || ops[0] != "resolve" {
		t.Fatalf("OnRetry ops %q, want one resolve", ops)
	}
	if !bytes.Contains(buf.Bytes(), []byte("429")) && !bytes.Contains(buf.Bytes(), []byte("rate")) {
		t.Fatalf("the retried tag resolution is not in the log:\n%s", buf.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

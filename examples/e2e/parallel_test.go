package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// A 256 MiB blob over 8 connections, every connection reset every 8 MiB
// and one range stalling: every range continues from its own last byte,
// the stalled one is cut and resumed, the blob verifies, and the registry
// sends the payload about once.
func TestParallelPullSurvivesResetsAndAStall(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 256*MiB)
	src := seed(t, reg, "parallel", a)
	reg.ResetStats()
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(8 * MiB)})
	stall := reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Skip: 5, Times: 1, Action: registrytest.Stall(2 * MiB)})
	defer stall.Remove()

	ev := &events{}
	tr := progress.NewTracker()
	dst := newLayout(t)
	opts := transfer.Options{Retry: fast(4), Observer: progress.Multi(ev, tr), StallTimeout: 2 * time.Second,
		PullConnections: 8, PullRangeSize: 32 * MiB}
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if stall.Applied() != 1 {
		t.Fatalf("the stall applied %d times", stall.Applied())
	}
	st := reg.Stats()
	if r := ratio(st.Kinds[registrytest.BlobGet].ResponseBodyBytes, payload(a)); r > 1.05 {
		t.Fatalf("blob GET body bytes / payload = %.3f, want <= 1.05", r)
	}
	if gets := st.Kinds[registrytest.BlobGet].Requests; gets < 8*4 {
		t.Fatalf("%d blob GETs: the blob was not fetched in ranges", gets)
	}
	var ranged, stalled int
	for _, e := range ev.of(progress.Resumed) {
		if !e.Range.IsZero() {
			ranged++
			if e.Offset <= e.Range.Start || e.Offset >= e.Range.End {
				t.Errorf("range resumed at %d outside %s", e.Offset, e.Range)
			}
		}
	}
	for _, e := range ev.of(progress.Retrying) {
		if e.Range.IsZero() {
			t.Errorf("a retry of the whole blob: %s (%v)", e.Reason, e.Err)
		}
		if e.Reason == "stalled" {
			stalled++
		}
	}
	// At least the injected stall (a loaded machine may add one).
	if ranged < 8*3 || stalled < 1 {
		t.Fatalf("%d ranges resumed, %d stalls reported; want >= 24 and >= 1", ranged, stalled)
	}
	if len(ev.notesContaining("over up to 8 connections")) == 0 {
		t.Fatalf("no note says the blob went over several connections: %v", ev.reasons(progress.Note))
	}
	// Progressed is the contiguous verified offset: it never goes back.
	var last int64
	for _, e := range ev.of(progress.Progressed) {
		if e.Offset < last {
			t.Fatalf("Progressed went back from %d to %d", last, e.Offset)
		}
		last = e.Offset
	}
	s := tr.Summary()
	if s.Resumes < ranged || s.Wire < payload(a) {
		t.Fatalf("summary %+v", s)
	}
}

// A registry that ignores Range answers the first ranged GET with the whole
// blob: the blob is read over that one connection, with a note.
func TestParallelPullRangeIgnored(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 40*MiB)
	src := seed(t, reg, "norange", a)
	reg.ResetStats()
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.IgnoreRange()})
	gets := reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest}) // counts
	ev := &events{}
	dst := newLayout(t)
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev, PullConnections: transfer.DefaultPullConnections}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	st := reg.Stats()
	if got := gets.Applied(); got != 1 {
		t.Fatalf("%d blob GETs, want the one whose whole body was used", got)
	}
	if r := ratio(st.Kinds[registrytest.BlobGet].ResponseBodyBytes, payload(a)); r > 1.01 {
		t.Fatalf("blob GET body bytes / payload = %.3f", r)
	}
	if len(ev.notesContaining("ignores Range")) != 1 {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
}

// A range that never advances fails its blob after MaxAttempts, naming the
// digest and the range; the sibling blob finishes and no manifest is
// pushed above the failed blob.
func TestParallelPullRangeNeverAdvances(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 64*MiB, 24*MiB)
	seed(t, reg, "stuck", a)
	big, sibling := a.layers[0], a.layers[1]
	const stuckAt = 24 * MiB
	var stalls atomic.Int64
	proxy := newThinProxy(t, reg, func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool {
		if registrytest.KindOf(r) != registrytest.BlobGet || !strings.HasSuffix(r.URL.Path, big.Digest.String()) ||
			!strings.HasPrefix(r.Header.Get("Range"), fmt.Sprintf("bytes=%d-", stuckAt)) {
			return false
		}
		// Headers, then silence: the range never advances.
		stalls.Add(1)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", stuckAt, stuckAt+8*MiB-1, big.Size))
		w.Header().Set("Content-Length", fmt.Sprint(8*MiB))
		w.WriteHeader(http.StatusPartialContent)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		return true
	}, nil)
	src := proxy.repo(t, reg, "stuck")
	dst := newLayout(t)
	ev := &events{}
	start := time.Now()
	_, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{
		Retry: fast(3), Observer: ev, StallTimeout: time.Second, PullConnections: transfer.DefaultPullConnections, PullRangeSize: 8 * MiB})
	if err == nil {
		t.Fatal("copy succeeded with a range that never advances")
	}
	be := mustFailOn(t, err, big.Digest)
	if want := fmt.Sprintf("bytes %d-%d", stuckAt, stuckAt+8*MiB-1); !strings.Contains(be.Error(), want) {
		t.Fatalf("error does not name the range %s: %v", want, be)
	}
	if n := stalls.Load(); n != 3 {
		t.Fatalf("the stuck range was asked for %d times, want MaxAttempts = 3", n)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("took %v", took)
	}
	ctx := context.Background()
	if ok, _ := dst.Exists(ctx, sibling); !ok {
		t.Fatal("the sibling blob did not finish")
	}
	if got, err := content.FetchAll(ctx, dst, sibling); err != nil || len(got) != int(sibling.Size) {
		t.Fatalf("sibling: %v", err)
	}
	if ok, _ := dst.Exists(ctx, a.root); ok {
		t.Fatal("the manifest was pushed above a failed blob")
	}
	if ok, _ := dst.Exists(ctx, big); ok {
		t.Fatal("the failed blob is in the destination")
	}
}

// Cancelling a copy stops every range at once; nothing is left running.
func TestParallelPullCancel(t *testing.T) {
	// Checked after the registry's own cleanup, registered below.
	ignore := append(registrytest.IgnoreLeaks(), goleak.IgnoreCurrent())
	t.Cleanup(func() { goleak.VerifyNone(t, ignore...) })
	reg := registrytest.New(t, registrytest.WithBandwidth(4*MiB, 0))
	a := newArtifact(t, 96*MiB)
	reg.SetBandwidth(0, 0)
	src := seed(t, reg, "cancel", a)
	reg.SetBandwidth(4*MiB, 0)
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	var cancelled time.Time
	obs := progress.Func(func(e progress.Event) {
		if e.Kind == progress.Progressed && e.Offset > 0 {
			once.Do(func() { cancelled = time.Now(); cancel() })
		}
	})
	_, err := transfer.Copy(ctx, src, "v1", newLayout(t), "", transfer.Options{Retry: fast(3), Observer: obs, PullConnections: transfer.DefaultPullConnections, PullRangeSize: 4 * MiB})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if took := time.Since(cancelled); took > time.Second {
		t.Fatalf("Copy returned %v after the cancel", took)
	}
}

// A registry that answers 429 to extra connections gets fewer of them for
// that blob, and the blob still finishes.
func TestParallelPullBacksOffConnections(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 64*MiB)
	seed(t, reg, "polite", a)
	layer := a.layers[0].Digest
	reg.SetBandwidth(32*MiB, 0)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Skip: 1, Times: 3,
		Action: registrytest.Respond(http.StatusTooManyRequests).WithRetryAfter(0)})
	src, counter := countedRepo(t, reg, "polite", layer)
	ev := &events{}
	dst := newLayout(t)
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{
		Retry: fast(4), Observer: ev, PullConnections: transfer.DefaultPullConnections, PullRangeSize: 2 * MiB}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if len(ev.notesContaining("fewer")) != 1 {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
	// Three 429s to one burst of requests halve 8 connections once: once
	// the workers in flight finish their ranges, 4 go on.
	seen := counter.seen()
	tail := seen[len(seen)-8:]
	if m := maxOf(tail); m > 4 {
		t.Fatalf("ranges in flight at the end: %v (all: %v)", tail, seen)
	}
	if m := maxOf(seen); m < 5 {
		t.Fatalf("never more than %d connections: %v", m, seen)
	}
}

// inFlight counts, on the client side, the GETs of one blob open at once:
// from the request until its body is closed.
type inFlight struct {
	base   http.RoundTripper
	digest string
	mu     sync.Mutex
	now    int
	starts []int // open when each request began, itself included
}

func (c *inFlight) RoundTrip(req *http.Request) (*http.Response, error) {
	if registrytest.KindOf(req) != registrytest.BlobGet || !strings.HasSuffix(req.URL.Path, c.digest) {
		return c.base.RoundTrip(req)
	}
	c.mu.Lock()
	c.now++
	c.starts = append(c.starts, c.now)
	c.mu.Unlock()
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		c.done()
		return nil, err
	}
	resp.Body = &closeHook{ReadCloser: resp.Body, hook: c.done}
	return resp, nil
}

func (c *inFlight) done() {
	c.mu.Lock()
	c.now--
	c.mu.Unlock()
}

func (c *inFlight) seen() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.starts)
}

type closeHook struct {
	io.ReadCloser
	once sync.Once
	hook func()
}

func (h *closeHook) Close() error {
	err := h.ReadCloser.Close()
	h.once.Do(h.hook)
	return err
}

func countedRepo(t testing.TB, reg *registrytest.Registry, name string, d digest.Digest) (*remote.Repository, *inFlight) {
	t.Helper()
	r := repo(t, reg, name)
	c := &inFlight{base: reg.Client().Transport, digest: d.String()}
	r.Client = &auth.Client{Client: &http.Client{Transport: c}, Cache: auth.NewCache()}
	return r, c
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// Blob GETs answered 307 to storage (as registries on object storage do):
// each range follows the redirect with its Range, and a Wrap'd repository's
// Fetch, read by plain oras.Copy, comes over several connections too.
func TestParallelPullFollowsRedirectsPerRange(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 48*MiB)
	seed(t, reg, "redirected", a)
	layer := a.layers[0]
	var mu sync.Mutex
	var storageRanges []string
	proxy := newThinProxy(t, reg, func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool {
		if d, ok := strings.CutPrefix(r.URL.Path, "/storage/"); ok {
			// "Storage": the registry's own blob, behind another path.
			mu.Lock()
			storageRanges = append(storageRanges, r.Header.Get("Range"))
			mu.Unlock()
			r.URL.Path = "/v2/redirected/blobs/" + d
			return false
		}
		if registrytest.KindOf(r) == registrytest.BlobGet && strings.HasSuffix(r.URL.Path, layer.Digest.String()) {
			http.Redirect(w, r, "/storage/"+layer.Digest.String(), http.StatusTemporaryRedirect)
			return true
		}
		return false
	}, nil)
	src := proxy.repo(t, reg, "redirected")
	opts := transfer.Options{Retry: fast(3), PullConnections: transfer.DefaultPullConnections, PullRangeSize: 8 * MiB}
	dst := newLayout(t)
	if _, err := oras.Copy(context.Background(), transfer.Wrap(src, opts), "v1", dst, "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	mu.Lock()
	defer mu.Unlock()
	if len(storageRanges) != 6 {
		t.Fatalf("storage saw %d GETs, want 6 ranges of 8 MiB: %q", len(storageRanges), storageRanges)
	}
	for i, r := range storageRanges {
		if !strings.HasPrefix(r, "bytes=") {
			t.Fatalf("storage GET %d without its Range: %q", i, storageRanges)
		}
	}
}

// With the zero Options, a registry whose every connection is capped (as
// object stores and CDNs cap them) gets the blob's first range over one
// connection, timed (2 MiB at 8 MiB/s: past measureFor); the reader waited
// on it nearly all the time, so the rest comes in ranges over several
// connections at once.
func TestAdaptivePullSplitsOnACappedLink(t *testing.T) {
	t.Parallel() // waits on the cap more than it computes
	reg := registrytest.New(t)
	a := newArtifact(t, 16*MiB)
	layer := a.layers[0]
	seed(t, reg, "capped", a)
	reg.SetBandwidth(8*MiB, 0)
	src, counter := countedRepo(t, reg, "capped", layer.Digest)
	ev := &events{}
	dst := newLayout(t)
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev, PullRangeSize: 2 * MiB}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	counter.mu.Lock()
	starts := append([]int(nil), counter.starts...)
	counter.mu.Unlock()
	// The measured GET alone (a second one of two ranges if the cap let
	// the first burst through faster), then one GET per range, several at
	// once.
	if n := len(starts); (n != 8 && n != 7) || starts[0] != 1 || maxOf(starts) < 4 {
		t.Fatalf("blob GETs open as each began: %v; want the measured range alone, then the rest, 4 or more at once", starts)
	}
	if len(ev.notesContaining("fetching the rest in ranges")) != 1 {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
	if r := ratio(reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes, payload(a)); r > 1.01 {
		t.Fatalf("blob GET body bytes / payload = %.3f", r)
	}
}

package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// matrixRetryAfter caps every Retry-After in the matrix: waits show the
// header was read without sleeping it.
const matrixRetryAfter = 20 * time.Millisecond

// matrixRun is one transfer of the matrix and what it observed.
type matrixRun struct {
	ev    *events
	opts  transfer.Options
	mu    sync.Mutex
	waits []time.Duration // backoffs OnRetry reported, in order
}

// newMatrixRun returns the options of a matrix transfer: tiny backoffs, a
// short stall timeout, Retry-After read but capped, every event recorded.
func newMatrixRun() *matrixRun {
	m := &matrixRun{ev: &events{}}
	// StallTimeout bounds the registry's silence while it verifies a PUT
	// (plus 1 s per 32 MiB): under -race on 2 busy cores ggcr can take
	// more than 1.4 s to hash 16 MiB, so 400 ms cut healthy commits.
	m.opts = transfer.Options{Retry: fast(4), Observer: m.ev, StallTimeout: time.Second}
	m.opts.Retry.MaxRetryAfter = matrixRetryAfter
	m.opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) {
		m.mu.Lock()
		m.waits = append(m.waits, ri.Backoff)
		m.mu.Unlock()
	}
	return m
}

func (m *matrixRun) backoffs() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Duration(nil), m.waits...)
}

// removeOnStall removes f once the client reports a stall, as a proxy's
// idle timeout would end the dead connection. ggcr reads one upload body
// at a time, so a PATCH held by a stall that nothing ends would block the
// upload the client falls back to.
func (m *matrixRun) removeOnStall(f *registrytest.Fault) {
	var once sync.Once
	m.opts.Observer = progress.Multi(m.ev, progress.Func(func(e progress.Event) {
		if e.Kind == progress.Retrying && e.Reason == "stalled" {
			once.Do(f.Remove)
		}
	}))
}

// hasNote reports whether a Note event's reason contains sub.
func (m *matrixRun) hasNote(sub string) bool {
	for _, r := range m.ev.reasons(progress.Note) {
		if strings.Contains(r, sub) {
			return true
		}
	}
	return false
}

// bodyCounter counts the request body bytes a client's transport took for
// uploads: what the client wrote into its connections, including what a
// reset then threw away.
type bodyCounter struct {
	base  http.RoundTripper
	bytes atomic.Int64
}

func (c *bodyCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody || (req.Method != http.MethodPatch && req.Method != http.MethodPut) {
		return c.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Body = &countedBody{ReadCloser: req.Body, n: &c.bytes}
	return c.base.RoundTrip(r)
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// countingRepo is repo with the upload bytes its client writes counted.
func countingRepo(t testing.TB, reg *registrytest.Registry, name string) (*remote.Repository, *bodyCounter) {
	t.Helper()
	r := repo(t, reg, name)
	bc := &bodyCounter{base: reg.Client().Transport}
	r.Client = &auth.Client{Client: &http.Client{Transport: bc}, Cache: auth.NewCache()}
	return r, bc
}

// uploadBytes is what the registry read of upload bodies (PATCH and PUT),
// which both implementations keep.
func uploadBytes(st registrytest.Stats) int64 {
	return st.Kinds[registrytest.UploadPatch].RequestBodyBytes + st.Kinds[registrytest.UploadPut].RequestBodyBytes
}

// pushMatrix pushes a one-layer artifact of matrixPushSize bytes to reg
// with m's options, checks the destination, and returns the upload body
// bytes the client wrote.
func pushMatrix(t *testing.T, reg *registrytest.Registry, m *matrixRun) int64 {
	t.Helper()
	if reg.Capabilities().SerialUploads {
		// The registry is silent towards every other upload while one
		// streams (ggcr holds one lock over all of them): one blob at a
		// time, or the config's PUT waits out the layer's PATCH and a
		// short StallTimeout calls that a stall.
		m.opts.Concurrency = 1
	}
	a := newArtifact(t, matrixPushSize)
	dst, counter := countingRepo(t, reg, "matrix-push")
	root, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", m.opts)
	// Counters are read once the registry has every byte it will keep.
	if err := reg.SettleCuts(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		if st := reg.Stats(); st.Kinds[registrytest.UploadPatch].Cuts > 0 {
			logCuts(t, st, counter.bytes.Load()) // what the cuts cost until the push gave up
		}
		t.Fatalf("push failed: %v\nretries %v\nnotes %v", err, m.ev.reasons(progress.Retrying), m.ev.reasons(progress.Note))
	}
	if root.Digest != a.root.Digest {
		t.Fatalf("root %s, want %s", root.Digest, a.root.Digest)
	}
	// Read back from the registry through verifying readers, and the tag.
	verifyStore(t, dst, a)
	if d, err := dst.Resolve(context.Background(), "v1"); err != nil || d.Digest != a.root.Digest {
		t.Fatalf("tag v1: %v %v", d.Digest, err)
	}
	assertCompleted(t, m, a.layers[0].Digest)
	return counter.bytes.Load()
}

// assertCompleted checks the layer's events end in Completed and nothing
// Failed.
func assertCompleted(t *testing.T, m *matrixRun, layer digest.Digest) {
	t.Helper()
	if f := m.ev.of(progress.Failed); len(f) != 0 {
		t.Errorf("Failed events %v", f)
	}
	for _, e := range m.ev.of(progress.Completed) {
		if e.Desc.Digest == layer {
			return
		}
	}
	t.Errorf("no Completed event for the layer")
}

// assertNoStatusFallback checks what a push must do on a registry that
// cannot report an upload's offset: say so in a Note, then finish by a
// monolithic upload (a PUT carrying the blob) or in a new session.
func assertNoStatusFallback(t *testing.T, reg *registrytest.Registry, m *matrixRun) {
	t.Helper()
	if len(m.ev.of(progress.Note)) == 0 {
		t.Error("no Note about the missing upload status")
	}
	st := reg.Stats().Kinds
	monolithic := st[registrytest.UploadPut].RequestBodyBytes >= matrixPushSize
	newSession := st[registrytest.UploadPost].Requests >= 3 // config, layer, layer again
	if !monolithic && !newSession {
		t.Errorf("neither a monolithic PUT nor a new session: %+v", st)
	}
}

// logCuts records what a push under realistic cuts cost: PATCHes per cut,
// and the upload bytes the client wrote beside those the registry kept.
func logCuts(t *testing.T, st registrytest.Stats, wrote int64) {
	t.Helper()
	p := st.Kinds[registrytest.UploadPatch]
	perCut := 0.0
	if p.Cuts > 0 {
		perCut = float64(p.Requests) / float64(p.Cuts)
	}
	t.Logf("%d PATCH requests for %d cuts (%.2f per cut); upload bytes: client wrote %d, registry kept %d (%d of them after the client's reset), payload %d",
		p.Requests, p.Cuts, perCut, wrote, uploadBytes(st), p.LateBodyBytes, int64(matrixPushSize))
}

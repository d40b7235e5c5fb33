package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// thinProxy is an httputil.ReverseProxy in front of the real registry for
// the lies registrytest's fault actions cannot express: answer decides
// whether it answers a request itself (true) instead of forwarding it, and
// modify may rewrite one header of a forwarded response. Everything else
// is forwarded unchanged:
//
//   - NewSingleHostReverseProxy's Director sets only req.URL, so the
//     outgoing request keeps the incoming Host header (the proxy's):
//     distribution builds upload Locations from it, and they point back at
//     the proxy (sturdy refuses a Location on another host, so an upload
//     that succeeds through the proxy shows it);
//   - an upstream failure (a registrytest reset) aborts the client's
//     connection, as the cut would on a real wire, instead of a 502.
type thinProxy struct {
	srv  *httptest.Server
	host string
	hits atomic.Int64 // requests answer or modify acted on (they count themselves)
}

func newThinProxy(t testing.TB, reg *registrytest.Registry, answer func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool, modify func(p *thinProxy, resp *http.Response) error) *thinProxy {
	t.Helper()
	target, err := url.Parse(reg.URL())
	if err != nil {
		t.Fatal(err)
	}
	p := &thinProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	// The registry's own transport: its idle connections are dropped when
	// the registry closes.
	rp.Transport = reg.Client().Transport
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ErrorHandler = func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) }
	if modify != nil {
		rp.ModifyResponse = func(resp *http.Response) error { return modify(p, resp) }
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if answer != nil && answer(p, w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Start()
	p.host = p.srv.Listener.Addr().String()
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

// repo is an oras-go repository that reaches the registry through the proxy.
func (p *thinProxy) repo(t testing.TB, reg *registrytest.Registry, name string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(p.host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	r.Client = &auth.Client{Client: reg.Client(), Cache: auth.NewCache()}
	return r
}

// trip is one request as the client saw it: how long it waited for its
// response headers (or its error) and how it ended.
type trip struct {
	Kind   registrytest.Kind
	Digest string // ?digest= of an upload PUT
	Took   time.Duration
	Status int
	Err    error
}

// recorder is a client-side RoundTripper that times every request; it
// answers nothing itself.
type recorder struct {
	base  http.RoundTripper
	mu    sync.Mutex
	trips []trip
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := r.base.RoundTrip(req)
	tr := trip{Kind: registrytest.KindOf(req), Digest: req.URL.Query().Get("digest"), Took: time.Since(start), Err: err}
	if resp != nil {
		tr.Status = resp.StatusCode
	}
	r.mu.Lock()
	r.trips = append(r.trips, tr)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) of(k registrytest.Kind) []trip {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []trip
	for _, t := range r.trips {
		if t.Kind == k {
			out = append(out, t)
		}
	}
	return out
}

// recordedRepo is repo(t, reg, name) with a recorder under its client.
func recordedRepo(t testing.TB, reg *registrytest.Registry, name string) (*remote.Repository, *recorder) {
	t.Helper()
	r := repo(t, reg, name)
	rec := &recorder{base: reg.Client().Transport}
	r.Client = &auth.Client{Client: &http.Client{Transport: rec}, Cache: auth.NewCache()}
	return r, rec
}

// retries collects what Options.Retry.OnRetry saw, for every blob.
type retries struct {
	mu    sync.Mutex
	infos []retrypolicy.RetryInfo
}

func (r *retries) on(ri retrypolicy.RetryInfo) {
	r.mu.Lock()
	r.infos = append(r.infos, ri)
	r.mu.Unlock()
}

func (r *retries) reasons() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ri := range r.infos {
		out = append(out, ri.Reason)
	}
	return out
}

func (r *retries) all() []retrypolicy.RetryInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]retrypolicy.RetryInfo(nil), r.infos...)
}

// configOf returns the config descriptor of a's manifest.
func configOf(t testing.TB, a *artifact) ocispec.Descriptor {
	t.Helper()
	raw, err := content.FetchAll(context.Background(), a.store, a.root)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m.Config
}

// prePushConfig puts a's config blob in the registry with plain oras-go, so
// a push of a moves only its layers (a rule for one request kind then
// acts on a layer's request, not the config's).
func prePushConfig(t testing.TB, reg *registrytest.Registry, name string, a *artifact) {
	t.Helper()
	ctx := context.Background()
	cfg := configOf(t, a)
	raw, err := content.FetchAll(ctx, a.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo(t, reg, name).Push(ctx, cfg, bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
}

// mapStore is a caller's own content.Storage that trusts what it is given:
// it stores bytes under whatever digest the descriptor says, unverified.
type mapStore struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
}

func newMapStore() *mapStore {
	return &mapStore{blobs: map[digest.Digest][]byte{}}
}

func (s *mapStore) Fetch(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d.Digest]
	if !ok {
		return nil, errdef.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *mapStore) Push(_ context.Context, d ocispec.Descriptor, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.blobs[d.Digest] = b
	s.mu.Unlock()
	return nil
}

func (s *mapStore) Exists(_ context.Context, d ocispec.Descriptor) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[d.Digest]
	return ok, nil
}

func (s *mapStore) has(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[d]
	return ok
}

// notesContaining returns the Note events whose reason contains sub.
func (e *events) notesContaining(sub string) []progress.Event {
	var out []progress.Event
	for _, ev := range e.of(progress.Note) {
		if strings.Contains(ev.Reason, sub) {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answerUploadStatus answers every upload-status GET itself with status and
// an OCI error body, as a registry without a usable status query does.
func answerUploadStatus(status int, code, message string) func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool {
	return func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool {
		if !isUploadStatusGet(r) {
			return false
		}
		p.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, message)
		return true
	}
}

package registrytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// newMirror starts an origin and a pull-through cache of it.
func newMirror(t *testing.T, originOpts ...Option) (origin, mirror *Registry) {
	t.Helper()
	origin = New(t, originOpts...)
	mirror = New(t, WithPullThrough(origin))
	if mirror.Origin() != origin || origin.Origin() != nil {
		t.Fatalf("Origin() = %p, %p", mirror.Origin(), origin.Origin())
	}
	if got, want := mirror.Capabilities(), (Capabilities{OpenEndedRange: true, ClosedRange: true}); got != want {
		t.Fatalf("cache Capabilities() = %+v, want %+v", got, want)
	}
	return origin, mirror
}

// reply is a response whose body was read to its end or its error.
type reply struct {
	*http.Response
	body    []byte
	bodyErr error
}

// code returns the first OCI error code of the body, "" if none.
func (r reply) code() string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(r.body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// do sends a request without a body to /v2/path and reads the answer.
func do(t *testing.T, r *Registry, method, path string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, r.URL()+"/v2/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := r.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{resp, body, err}
}

func blobPath(repo string, d digest.Digest) string { return repo + "/blobs/" + d.String() }

// blobBytes returns what a registry's BlobGet handlers wrote.
func blobBytes(r *Registry) int64 { return r.Stats().Kinds[BlobGet].ResponseBodyBytes }

// TestPullThrough pulls an image through the cache twice: the origin sends
// each blob once, and every pull still asks it for the tag.
func TestPullThrough(t *testing.T) {
	origin, mirror := newMirror(t)
	layer := randomBytes(3<<20, 60)
	root := pushArtifact(t, origin, "cache/model", "v1", layer)
	blobs := int64(len(layer)) + int64(len(ocispec.DescriptorEmptyJSON.Data)) // the layer and the empty config
	origin.ResetStats()

	if got := pullLayer(t, mirror, "cache/model", "v1"); !bytes.Equal(got, layer) {
		t.Fatal("layer pulled through the cache differs")
	}
	if got := blobBytes(origin); got != blobs {
		t.Errorf("first pull: origin sent %d blob bytes, want %d", got, blobs)
	}
	if got := blobBytes(mirror); got != blobs {
		t.Errorf("first pull: cache sent %d blob bytes, want %d", got, blobs)
	}

	origin.ResetStats()
	mirror.ResetStats()
	if got := pullLayer(t, mirror, "cache/model", "v1"); !bytes.Equal(got, layer) {
		t.Fatal("layer pulled from the cache differs")
	}
	s := origin.Stats().Kinds
	if s[BlobGet].Requests != 0 || s[BlobHead].Requests != 0 || s[ManifestGet].Requests != 0 {
		t.Errorf("second pull cost the origin blob or manifest requests: %+v", s)
	}
	// The tag is looked up on the origin every time (a HEAD): a tag can move.
	if s[ManifestHead].Statuses[200] == 0 {
		t.Errorf("second pull did not ask the origin for the tag: %+v", s)
	}
	if got := blobBytes(mirror); got != blobs {
		t.Errorf("second pull: cache sent %d blob bytes, want %d", got, blobs)
	}

	// By digest, the cached manifest needs no origin at all.
	origin.ResetStats()
	rr, err := mirror.Repository("cache/model")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := content.FetchAll(testContext(t), rr, root); err != nil {
		t.Fatalf("fetch the manifest by digest: %v", err)
	}
	if s := origin.Stats().Kinds; len(s) != 0 {
		t.Errorf("a cached manifest by digest cost the origin %+v", s)
	}
}

// TestPullThroughRange pins what ranged reads and HEADs get from the cache:
// the whole blob with 200 until it is cached, 206 after.
func TestPullThroughRange(t *testing.T) {
	origin, mirror := newMirror(t)
	const size = 1 << 20
	for i, rng := range []string{"bytes=10-19", "bytes=100-", "bytes=2000000-"} {
		data := randomBytes(size, byte(61+i))
		d := pushBlob(t, origin, "cache/range", data).Digest
		origin.ResetStats()

		// Uncached: distribution's proxy streams the whole blob from the
		// origin to the client and its storage at once, and ignores Range.
		got := do(t, mirror, http.MethodGet, blobPath("cache/range", d), "Range", rng)
		if got.StatusCode != http.StatusOK || !bytes.Equal(got.body, data) ||
			got.Header.Get("Content-Range") != "" || got.Header.Get("Accept-Ranges") != "" {
			t.Fatalf("%s, uncached: %d, %d bytes, Content-Range %q, Accept-Ranges %q; want 200 and the whole blob",
				rng, got.StatusCode, len(got.body), got.Header.Get("Content-Range"), got.Header.Get("Accept-Ranges"))
		}
		if n := blobBytes(origin); n != size {
			t.Fatalf("%s, uncached: origin sent %d bytes, want %d", rng, n, size)
		}

		// Cached: served from storage like any distribution registry.
		got = do(t, mirror, http.MethodGet, blobPath("cache/range", d), "Range", rng)
		var first, last int
		switch i {
		case 0:
			first, last = 10, 19
		case 1:
			first, last = 100, size-1
		default:
			if got.StatusCode != http.StatusRequestedRangeNotSatisfiable {
				t.Fatalf("%s, cached: %d, want 416", rng, got.StatusCode)
			}
			continue
		}
		if want := "bytes " + strconv.Itoa(first) + "-" + strconv.Itoa(last) + "/" + strconv.Itoa(size); got.StatusCode != http.StatusPartialContent ||
			got.Header.Get("Content-Range") != want || !bytes.Equal(got.body, data[first:last+1]) {
			t.Fatalf("%s, cached: %d, Content-Range %q, %d bytes; want 206, %q", rng, got.StatusCode, got.Header.Get("Content-Range"), len(got.body), want)
		}
		if n := blobBytes(origin); n != size {
			t.Errorf("%s, cached: the origin sent more: %d bytes", rng, n)
		}
	}

	// HEAD of an uncached blob fetches and caches the whole blob (the
	// client gets no body and no Accept-Ranges); HEAD once cached says
	// Accept-Ranges: bytes.
	data := randomBytes(size, 64)
	d := pushBlob(t, origin, "cache/range", data).Digest
	origin.ResetStats()
	mirror.ResetStats()
	got := do(t, mirror, http.MethodHead, blobPath("cache/range", d))
	if got.StatusCode != http.StatusOK || got.ContentLength != size || got.Header.Get("Accept-Ranges") != "" {
		t.Fatalf("HEAD, uncached: %d, Content-Length %d, Accept-Ranges %q", got.StatusCode, got.ContentLength, got.Header.Get("Accept-Ranges"))
	}
	if n := blobBytes(origin); n != size {
		t.Errorf("HEAD, uncached: origin sent %d blob bytes, want the whole blob (%d)", n, size)
	}
	if n := mirror.Stats().Kinds[BlobHead].ResponseBodyBytes; n != 0 {
		t.Errorf("HEAD counted %d body bytes", n)
	}
	got = do(t, mirror, http.MethodHead, blobPath("cache/range", d))
	if got.StatusCode != http.StatusOK || got.ContentLength != size || got.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("HEAD, cached: %d, Content-Length %d, Accept-Ranges %q", got.StatusCode, got.ContentLength, got.Header.Get("Accept-Ranges"))
	}
	if got := do(t, mirror, http.MethodGet, blobPath("cache/range", d), "Range", "bytes=0-9"); got.StatusCode != http.StatusPartialContent {
		t.Fatalf("Range after HEAD: %d, want 206", got.StatusCode)
	}
	if n := blobBytes(origin); n != size {
		t.Errorf("after HEAD: origin sent %d blob bytes, want %d", n, size)
	}
}

// TestPullThroughConcurrent: a request for a blob the cache is still
// fetching is streamed from the origin again, whole, and not cached.
func TestPullThroughConcurrent(t *testing.T) {
	origin, mirror := newMirror(t)
	const size = 1 << 20
	data := randomBytes(size, 65)
	d := pushBlob(t, origin, "cache/both", data).Digest
	origin.ResetStats()

	slow := origin.Inject(Rule{Kind: BlobGet, Times: 1, Action: Delay(500 * time.Millisecond)})
	first := make(chan reply, 1)
	go func() { first <- do(t, mirror, http.MethodGet, blobPath("cache/both", d)) }()
	for deadline := time.Now().Add(5 * time.Second); slow.Applied() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cache never fetched the blob")
		}
	}
	got := do(t, mirror, http.MethodGet, blobPath("cache/both", d), "Range", "bytes=0-9")
	if got.StatusCode != http.StatusOK || !bytes.Equal(got.body, data) {
		t.Fatalf("while fetching: %d, %d bytes; want 200 and the whole blob", got.StatusCode, len(got.body))
	}
	if r := <-first; r.StatusCode != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("first request: %d, %d bytes", r.StatusCode, len(r.body))
	}
	if n := blobBytes(origin); n != 2*size {
		t.Errorf("origin sent %d bytes, want the blob twice (%d)", n, 2*size)
	}
	if got := do(t, mirror, http.MethodGet, blobPath("cache/both", d), "Range", "bytes=0-9"); got.StatusCode != http.StatusPartialContent {
		t.Errorf("after both: %d, want 206 (cached by the first)", got.StatusCode)
	}
}

// TestPullThroughReadOnly: the cache refuses uploads, manifest pushes and
// deletes with 405 UNSUPPORTED.
func TestPullThroughReadOnly(t *testing.T) {
	origin, mirror := newMirror(t)
	root := pushArtifact(t, origin, "cache/ro", "v1", randomBytes(1000, 66))
	c := mirror.Client()
	for _, tc := range []struct {
		method, path string
		body         []byte
	}{
		{http.MethodPost, "cache/ro/blobs/uploads/", nil},
		{http.MethodPost, "cache/ro/blobs/uploads/?digest=" + digest.FromString("x").String(), []byte("x")},
		{http.MethodPut, "cache/ro/manifests/v2", []byte(`{}`)},
		{http.MethodDelete, "cache/ro/manifests/" + root.Digest.String(), nil},
	} {
		req, _ := http.NewRequest(tc.method, mirror.URL()+"/v2/"+tc.path, bytes.NewReader(tc.body))
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if r := (reply{resp, body, nil}); r.StatusCode != http.StatusMethodNotAllowed || r.code() != "UNSUPPORTED" {
			t.Errorf("%s %s: %d %s, want 405 UNSUPPORTED", tc.method, tc.path, r.StatusCode, body)
		}
	}
	rr, err := mirror.Repository("cache/ro")
	if err != nil {
		t.Fatal(err)
	}
	blob := []byte("pushed to a cache")
	err = rr.Push(testContext(t), content.NewDescriptorFromBytes("application/octet-stream", blob), bytes.NewReader(blob))
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("oras push to the cache: %v, want a 405", err)
	}
}

// TestPullThroughMissing: what the origin lacks is 404 on the cache, with
// the codes of a plain registry but MANIFEST_UNKNOWN (not NAME_UNKNOWN)
// for an unknown repository.
func TestPullThroughMissing(t *testing.T) {
	origin, mirror := newMirror(t)
	d := pushBlob(t, origin, "cache/here", []byte("only here")).Digest
	accept := []string{"Accept", ocispec.MediaTypeImageManifest}
	for _, tc := range []struct {
		path, code string
		hdr        []string
	}{
		{blobPath("cache/here", digest.FromString("absent")), "BLOB_UNKNOWN", nil},
		{blobPath("cache/elsewhere", d), "BLOB_UNKNOWN", nil}, // the origin links blobs per repository
		{"cache/nowhere/manifests/v1", "MANIFEST_UNKNOWN", accept},
		{"cache/here/manifests/v1", "MANIFEST_UNKNOWN", accept},
		{"cache/here/manifests/" + d.String(), "MANIFEST_UNKNOWN", accept},
	} {
		if got := do(t, mirror, http.MethodGet, tc.path, tc.hdr...); got.StatusCode != http.StatusNotFound || got.code() != tc.code {
			t.Errorf("GET %s: %d %s, want 404 %s", tc.path, got.StatusCode, got.body, tc.code)
		}
	}
	rr, err := mirror.Repository("cache/here")
	if err != nil {
		t.Fatal(err)
	}
	missing := content.NewDescriptorFromBytes("application/octet-stream", []byte("absent"))
	if _, err := rr.Fetch(testContext(t), missing); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("oras fetch of a missing blob: %v, want ErrNotFound", err)
	}
}

// TestPullThroughFaults: faults on the cache hit the cache's clients only;
// faults on the origin reach them in the cache's words.
func TestPullThroughFaults(t *testing.T) {
	origin, mirror := newMirror(t)
	const size = 1 << 20
	data := randomBytes(size, 67)
	desc := pushBlob(t, origin, "cache/faults", data)
	rr, err := mirror.Repository("cache/faults")
	if err != nil {
		t.Fatal(err)
	}
	origin.ResetStats()

	t.Run("reset on the cache", func(t *testing.T) {
		mirror.Inject(Rule{Kind: BlobGet, Times: 1, Action: ResetAfter(1000)})
		_, err := content.FetchAll(testContext(t), rr, desc)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("fetch: %v, want a reset", err)
		}
		if m, o := mirror.Stats().Kinds[BlobGet].Cuts, origin.Stats().Kinds[BlobGet]; m != 1 || o.Cuts != 0 || o.Statuses[200] != 1 {
			t.Errorf("cuts on the cache %d, origin %+v; want the cut on the cache only", m, o)
		}
		// The cache stopped copying when its client went: nothing cached, and
		// the retry costs the origin the whole blob again.
		if got, err := content.FetchAll(testContext(t), rr, desc); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch again: %v", err)
		}
		if n := origin.Stats().Kinds[BlobGet].Requests; n != 2 {
			t.Errorf("origin blob GETs %d, want 2", n)
		}
	})

	data2 := randomBytes(size, 68)
	desc2 := pushBlob(t, origin, "cache/faults", data2)
	t.Run("reset on the origin", func(t *testing.T) {
		// The cache has sent 200 and Content-Length already: its client reads
		// a short body, and the cache keeps nothing.
		origin.Inject(Rule{Kind: BlobGet, Times: 1, Action: ResetAfter(1000)})
		got := do(t, mirror, http.MethodGet, blobPath("cache/faults", desc2.Digest))
		if got.StatusCode != http.StatusOK || got.ContentLength != size || !errors.Is(got.bodyErr, io.ErrUnexpectedEOF) || len(got.body) >= size {
			t.Fatalf("%d, Content-Length %d, %d bytes, %v; want 200 and a short body", got.StatusCode, got.ContentLength, len(got.body), got.bodyErr)
		}
		if got := do(t, mirror, http.MethodGet, blobPath("cache/faults", desc2.Digest), "Range", "bytes=0-9"); got.StatusCode != http.StatusOK {
			t.Errorf("after the cut: %d, want 200 (not cached)", got.StatusCode)
		}
	})

	data3 := randomBytes(size, 69)
	desc3 := pushBlob(t, origin, "cache/faults", data3)
	t.Run("503 on the origin", func(t *testing.T) {
		// A 503 on the origin's blob GET becomes 500 UNKNOWN, Retry-After
		// lost; the cache had already set the blob's Content-Length, so
		// the error body comes short (unexpected EOF).
		origin.Inject(Rule{Kind: BlobGet, Times: 1, Action: Respond(503).WithRetryAfter(5 * time.Second)})
		got := do(t, mirror, http.MethodGet, blobPath("cache/faults", desc3.Digest))
		if got.StatusCode != http.StatusInternalServerError || got.code() != "UNKNOWN" || got.Header.Get("Retry-After") != "" ||
			got.ContentLength != size || !errors.Is(got.bodyErr, io.ErrUnexpectedEOF) {
			t.Fatalf("%d %s, Retry-After %q, Content-Length %d, %v", got.StatusCode, got.body, got.Header.Get("Retry-After"), got.ContentLength, got.bodyErr)
		}
		// On the origin's blob HEAD (the cache's first question): 500 UNKNOWN.
		origin.Inject(Rule{Kind: BlobHead, Times: 1, Action: Respond(503)})
		_, err := content.FetchAll(testContext(t), rr, desc3)
		var er *errcode.ErrorResponse
		if !errors.As(err, &er) || er.StatusCode != http.StatusInternalServerError || len(er.Errors) == 0 || er.Errors[0].Code != "UNKNOWN" {
			t.Fatalf("oras fetch: %v, want 500 UNKNOWN", err)
		}
		if got, err := content.FetchAll(testContext(t), rr, desc3); err != nil || !bytes.Equal(got, data3) {
			t.Fatalf("fetch once the origin is back: %v", err)
		}
	})

	t.Run("503 on the origin, tags", func(t *testing.T) {
		// The cache asks the origin for a tag and falls back to its own
		// copy when the origin fails: a tag it never saw is 404
		// MANIFEST_UNKNOWN, one it cached is served (maybe stale).
		root := pushArtifact(t, origin, "cache/tags", "v1", randomBytes(1000, 70))
		accept := []string{"Accept", ocispec.MediaTypeImageManifest}
		down := origin.Inject(Rule{Kind: ManifestGet | ManifestHead, Action: Respond(503)})
		if got := do(t, mirror, http.MethodGet, "cache/tags/manifests/v1", accept...); got.StatusCode != http.StatusNotFound || got.code() != "MANIFEST_UNKNOWN" {
			t.Fatalf("uncached tag: %d %s, want 404 MANIFEST_UNKNOWN", got.StatusCode, got.body)
		}
		// By digest there is no fallback: 500 UNKNOWN, as for blobs.
		if got := do(t, mirror, http.MethodGet, "cache/tags/manifests/"+root.Digest.String(), accept...); got.StatusCode != http.StatusInternalServerError || got.code() != "UNKNOWN" {
			t.Fatalf("uncached digest: %d %s, want 500 UNKNOWN", got.StatusCode, got.body)
		}
		down.Remove()
		if got := do(t, mirror, http.MethodGet, "cache/tags/manifests/v1", accept...); got.StatusCode != http.StatusOK {
			t.Fatalf("tag: %d %s", got.StatusCode, got.body)
		}
		origin.Inject(Rule{Kind: ManifestGet | ManifestHead, Action: Respond(503)})
		if got := do(t, mirror, http.MethodGet, "cache/tags/manifests/v1", accept...); got.StatusCode != http.StatusOK {
			t.Fatalf("cached tag: %d %s, want 200", got.StatusCode, got.body)
		}
	})
}

// TestPullThroughAuth: the cache logs in to an origin with credentials.
func TestPullThroughAuth(t *testing.T) {
	for name, opt := range map[string]Option{
		"basic": WithBasicAuth("carol", "s3cret"),
		"token": WithTokenAuth("carol", "s3cret", time.Minute),
	} {
		t.Run(name, func(t *testing.T) {
			origin, mirror := newMirror(t, opt)
			layer := randomBytes(64<<10, 71)
			pushArtifact(t, origin, "cache/auth", "v1", layer)
			if got := pullLayer(t, mirror, "cache/auth", "v1"); !bytes.Equal(got, layer) {
				t.Fatal("layer differs")
			}
		})
	}
}

func TestPullThroughStartErrors(t *testing.T) {
	origin := New(t)
	if r, err := Start(WithPullThrough(origin), WithImplementation(GGCR)); err == nil {
		r.Close()
		t.Error("a ggcr pull-through cache started")
	}
	tlsOrigin := New(t, WithTLS())
	if r, err := Start(WithPullThrough(tlsOrigin)); err == nil {
		r.Close()
		t.Error("a cache of a TLS origin started")
	}
	closed, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if r, err := Start(WithPullThrough(closed)); err == nil {
		r.Close()
		t.Error("a cache of a closed origin started")
	}
	// The cache itself may serve TLS.
	mirror := New(t, WithPullThrough(origin), WithTLS())
	layer := randomBytes(1000, 72)
	pushArtifact(t, origin, "cache/tls", "v1", layer)
	if got := pullLayer(t, mirror, "cache/tls", "v1"); !bytes.Equal(got, layer) {
		t.Fatal("layer differs")
	}
}

// TestPullThroughClose: either may close first, even with a fetch stalled
// on the origin, and nothing is left running.
func TestPullThroughClose(t *testing.T) {
	defer goleak.VerifyNone(t, append(IgnoreLeaks(Distribution), goleak.IgnoreCurrent())...)
	for _, originFirst := range []bool{true, false} {
		origin, err := Start()
		if err != nil {
			t.Fatal(err)
		}
		mirror, err := Start(WithPullThrough(origin))
		if err != nil {
			t.Fatal(err)
		}
		desc := pushBlob(t, origin, "cache/close", randomBytes(256<<10, 73))
		stall := origin.Inject(Rule{Kind: BlobGet, Action: Stall(1000)})
		done := make(chan error, 1)
		go func() {
			rr, err := mirror.Repository("cache/close")
			if err == nil {
				_, err = content.FetchAll(testContext(t), rr, desc)
			}
			done <- err
		}()
		for deadline := time.Now().Add(5 * time.Second); stall.Applied() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the fetch never reached the origin")
			}
		}
		first, second := mirror, origin
		if originFirst {
			first, second = origin, mirror
		}
		start := time.Now()
		if err := first.Close(); err != nil {
			t.Errorf("close first: %v", err)
		}
		if err := second.Close(); err != nil {
			t.Errorf("close second: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("origin first %v: closing took %v", originFirst, d)
		}
		if err := <-done; err == nil {
			t.Errorf("origin first %v: the stalled fetch succeeded", originFirst)
		}
	}
}

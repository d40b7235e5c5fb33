package registrytest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

// TestCapabilities probes every capability on the real implementation and
// compares with what Capabilities claims: a registry upgrade that changes
// one fails here, naming it.
func TestCapabilities(t *testing.T) {
	eachImpl(t, func(t *testing.T, impl Implementation) {
		r := New(t, WithImplementation(impl))
		if r.Impl() != impl {
			t.Fatalf("Impl() = %v, want %v", r.Impl(), impl)
		}
		got, want := probeCapabilities(t, r), r.Capabilities()
		gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
		for i := range gv.NumField() {
			if gv.Field(i).Bool() != wv.Field(i).Bool() {
				t.Errorf("%s: the registry behaves as %v, Capabilities says %v", gv.Type().Field(i).Name, gv.Field(i).Bool(), wv.Field(i).Bool())
			}
		}
	})
}

// status sends a request and returns its status code, failing the test on
// a transport error.
func status(t *testing.T, c *http.Client, method, u string, body []byte, hdr ...string) *http.Response {
	t.Helper()
	resp, err := send(c, method, u, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return resp
}

// either turns a status into a capability: yes and no are the two answers
// the implementations give; anything else fails the test.
func either(t *testing.T, what string, got, yes, no int) bool {
	t.Helper()
	switch got {
	case yes:
		return true
	case no:
		return false
	}
	t.Fatalf("%s: status %d, want %d or %d", what, got, yes, no)
	return false
}

// heldIs reports whether an upload session holds exactly n > 0 bytes,
// asking the way holds does, without failing.
func heldIs(t *testing.T, r *Registry, u string, n int64) bool {
	t.Helper()
	want := fmt.Sprintf("0-%d", n-1)
	if r.Capabilities().UploadStatus {
		resp := status(t, r.Client(), http.MethodGet, u, nil)
		return resp.StatusCode == http.StatusNoContent && resp.Header.Get("Range") == want
	}
	resp := status(t, r.Client(), http.MethodPatch, u, []byte{},
		"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", n, n-1))
	return resp.StatusCode == http.StatusAccepted && resp.Header.Get("Range") == want
}

func probeCapabilities(t *testing.T, r *Registry) Capabilities {
	var caps Capabilities
	c := r.Client()
	blob := randomBytes(64<<10, 40)
	d := pushBlob(t, r, "caps", blob).Digest
	chunk := randomBytes(1000, 41)

	resp := get(t, c, r, "caps", d, "Range", "bytes=100-")
	caps.OpenEndedRange = either(t, "GET bytes=100-", resp.StatusCode, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable)

	resp = get(t, c, r, "caps", d, "Range", "bytes=100-199")
	got, err := io.ReadAll(resp.Body)
	caps.ClosedRange = resp.StatusCode == http.StatusPartialContent && err == nil && bytes.Equal(got, blob[100:200]) &&
		resp.Header.Get("Content-Range") == fmt.Sprintf("bytes 100-199/%d", len(blob))

	// Upload status and cancel, on a session holding 1000 bytes.
	u := startUpload(t, r, "caps")
	resp = status(t, c, http.MethodPatch, u, chunk, "Content-Type", "application/octet-stream", "Content-Range", "0-999")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d", resp.StatusCode)
	}
	u1 := location(t, r, resp)
	resp = status(t, c, http.MethodGet, u1, nil)
	caps.UploadStatus = either(t, "GET on an upload URL", resp.StatusCode, http.StatusNoContent, http.StatusBadRequest)
	if caps.UploadStatus && resp.Header.Get("Range") != "0-999" {
		t.Errorf("upload status Range %q, want 0-999", resp.Header.Get("Range"))
	}
	caps.LocationPerChunk = u1 != u &&
		status(t, c, http.MethodPatch, u, chunk, "Content-Type", "application/octet-stream", "Content-Range", "1000-1999").StatusCode == http.StatusRequestedRangeNotSatisfiable
	resp = status(t, c, http.MethodDelete, u1, nil)
	caps.UploadCancel = either(t, "DELETE on an upload URL", resp.StatusCode, http.StatusNoContent, http.StatusBadRequest)
	if !caps.UploadCancel && !heldIs(t, r, u1, 1000) {
		t.Error("a refused DELETE lost the session")
	}

	// A PATCH must start at the bytes held: before them, or past them.
	u = startUpload(t, r, "caps")
	resp = status(t, c, http.MethodPatch, u, chunk, "Content-Type", "application/octet-stream", "Content-Range", "0-999")
	u = location(t, r, resp)
	before := status(t, c, http.MethodPatch, u, chunk, "Content-Type", "application/octet-stream", "Content-Range", "500-1499")
	after := status(t, c, http.MethodPatch, u, chunk, "Content-Type", "application/octet-stream", "Content-Range", "2000-2999")
	caps.StrictPatchStart = before.StatusCode == http.StatusRequestedRangeNotSatisfiable &&
		after.StatusCode == http.StatusRequestedRangeNotSatisfiable

	// A PATCH broken after 300 bytes leaves them in the session.
	u = startUpload(t, r, "caps")
	f := r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: ResetAfter(300)})
	if _, err := patch(c, u, 0, chunk); !isUploadReset(err) {
		t.Fatalf("PATCH: %v, want a reset", err)
	}
	f.Remove()
	caps.PartialPatchKept = heldIs(t, r, u, 300)

	// An upload id nobody allocated.
	resp = status(t, c, http.MethodPost, r.URL()+"/v2/caps/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-0" {
		t.Errorf("POST: %d Range %q, want 202 with Range 0-0", resp.StatusCode, resp.Header.Get("Range"))
	}
	resp = status(t, c, http.MethodPatch, r.URL()+"/v2/caps/blobs/uploads/4242424242", chunk,
		"Content-Type", "application/octet-stream", "Content-Range", "0-999")
	caps.LazySession = resp.StatusCode == http.StatusAccepted

	resp = status(t, c, http.MethodPost, r.URL()+"/v2/caps-mount/blobs/uploads/?mount="+d.String()+"&from=caps", nil)
	caps.Mount = either(t, "POST ?mount=", resp.StatusCode, http.StatusCreated, http.StatusAccepted)

	req, _ := http.NewRequest(http.MethodHead, r.URL()+"/v2/caps-elsewhere/blobs/"+d.String(), nil)
	hresp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	caps.SharedBlobs = either(t, "HEAD in another repository", hresp.StatusCode, http.StatusOK, http.StatusNotFound)

	caps.SerialUploads = probeSerialUploads(t, r)
	return caps
}

// probeSerialUploads stalls one PATCH and sends another to a second
// session: a registry that reads one body at a time does not answer it.
func probeSerialUploads(t *testing.T, r *Registry) bool {
	stalled, other := startUpload(t, r, "caps-serial"), startUpload(t, r, "caps-serial")
	f := r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: Stall(100)})
	done := make(chan error, 1)
	go func() {
		c := r.Client()
		c.Timeout = 10 * time.Second
		_, err := patch(c, stalled, 0, randomBytes(1000, 42))
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); f.Applied() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("stall not applied")
		}
	}
	time.Sleep(50 * time.Millisecond) // let the stalled handler reach its hold
	c := r.Client()
	c.Timeout = 500 * time.Millisecond
	resp, err := patch(c, other, 0, randomBytes(1000, 43))
	f.Remove()
	if err := <-done; err == nil {
		t.Error("the stalled PATCH succeeded")
	}
	switch {
	case err == nil && resp.StatusCode == http.StatusAccepted:
		return false
	case isTimeout(err):
		return true
	}
	t.Fatalf("PATCH beside a stalled one: %v %v", resp, err)
	return false
}

// Quirks that Capabilities does not name, pinned per implementation.
func TestQuirks(t *testing.T) {
	eachImpl(t, func(t *testing.T, impl Implementation) {
		r := New(t, WithImplementation(impl))
		c := r.Client()
		blob := randomBytes(10000, 44)
		d := pushBlob(t, r, "quirks", blob).Digest

		// A closed range that ends past the blob: distribution serves what
		// there is, ggcr refuses it.
		resp := get(t, c, r, "quirks", d, "Range", "bytes=9000-19999")
		want := map[Implementation]int{Distribution: http.StatusPartialContent, GGCR: http.StatusRequestedRangeNotSatisfiable}[impl]
		if resp.StatusCode != want {
			t.Errorf("range past the end: %d, want %d", resp.StatusCode, want)
		}

		// The RFC form of Content-Range on a PATCH: distribution fails
		// with 500, ggcr cannot parse it (416). Clients send "a-b".
		u := startUpload(t, r, "quirks")
		resp = status(t, c, http.MethodPatch, u, blob[:1000], "Content-Type", "application/octet-stream", "Content-Range", "bytes 0-999/*")
		want = map[Implementation]int{Distribution: http.StatusInternalServerError, GGCR: http.StatusRequestedRangeNotSatisfiable}[impl]
		if resp.StatusCode != want {
			t.Errorf("PATCH with Content-Range bytes 0-999/*: %d, want %d", resp.StatusCode, want)
		}

		// A PATCH without Content-Range streams into the session; after
		// the first write ggcr refuses another (400), distribution appends.
		u = startUpload(t, r, "quirks")
		first := status(t, c, http.MethodPatch, u, blob[:1000], "Content-Type", "application/octet-stream")
		if first.StatusCode != http.StatusAccepted {
			t.Fatalf("streamed PATCH: %d", first.StatusCode)
		}
		resp = status(t, c, http.MethodPatch, location(t, r, first), blob[1000:2000], "Content-Type", "application/octet-stream")
		want = map[Implementation]int{Distribution: http.StatusAccepted, GGCR: http.StatusBadRequest}[impl]
		if resp.StatusCode != want {
			t.Errorf("second streamed PATCH: %d, want %d", resp.StatusCode, want)
		}

		// PUT ?digest= verifies what the session holds, and a refused PUT
		// leaves nothing behind under that digest.
		u = startUpload(t, r, "quirks")
		other := randomBytes(5000, 45)
		resp = status(t, c, http.MethodPut, withQuery(u, "digest", digest.FromBytes(other).String()), blob[:5000],
			"Content-Type", "application/octet-stream")
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT with a wrong digest: %d, want 400", resp.StatusCode)
		}
		if resp := get(t, c, r, "quirks", digest.FromBytes(other)); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET after a refused PUT: %d, want 404", resp.StatusCode)
		}

		// ggcr's upload URL is the same for every request of a session,
		// with no query: /v2/<name>/blobs/uploads/<decimal id>.
		if impl == GGCR {
			resp = status(t, c, http.MethodPost, r.URL()+"/v2/quirks/blobs/uploads/", nil)
			loc := resp.Header.Get("Location")
			id, ok := bytes.CutPrefix([]byte(loc), []byte("/v2/quirks/blobs/uploads/"))
			if _, err := strconv.ParseUint(string(id), 10, 63); !ok || err != nil {
				t.Errorf("ggcr upload Location %q", loc)
			}
			if info := classify(httptestRequest(http.MethodPatch, loc)); info.kind != UploadPatch || info.upload != string(id) || info.repo != "quirks" {
				t.Errorf("classify(PATCH %s) = %+v", loc, info)
			}
		}
	})
}

func httptestRequest(method, target string) *http.Request {
	req, err := http.NewRequest(method, "http://registry"+target, nil)
	if err != nil {
		panic(err)
	}
	return req
}

// ggcr starts no goroutine: a GGCR registry closed after pushes and
// pulls leaves nothing behind, without distribution's exemption.
func TestGGCRLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, append(IgnoreLeaks(GGCR), goleak.IgnoreCurrent())...)
	r, err := Start(WithImplementation(GGCR))
	if err != nil {
		t.Fatal(err)
	}
	layer := randomBytes(1<<20, 46)
	pushArtifact(t, r, "leaks", "v1", layer)
	if got := pullLayer(t, r, "leaks", "v1"); !bytes.Equal(got, layer) {
		t.Fatal("pulled layer differs")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

package registrytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, IgnoreLeaks()...)
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pushBlob stores data in repo through oras-go and returns its descriptor.
func pushBlob(t *testing.T, r *Registry, repo string, data []byte) ocispec.Descriptor {
	t.Helper()
	rr, err := r.Repository(repo)
	if err != nil {
		t.Fatal(err)
	}
	desc := content.NewDescriptorFromBytes("application/octet-stream", data)
	if err := rr.Push(testContext(t), desc, bytes.NewReader(data)); err != nil {
		t.Fatalf("push blob: %v", err)
	}
	return desc
}

// pushArtifact pushes a manifest with one layer through oras.Copy from a
// memory store and returns the manifest descriptor.
func pushArtifact(t *testing.T, r *Registry, repo, tag string, layer []byte) ocispec.Descriptor {
	t.Helper()
	ctx := testContext(t)
	src := memory.New()
	layerDesc, err := oras.PushBytes(ctx, src, "application/vnd.example.layer", layer)
	if err != nil {
		t.Fatal(err)
	}
	root, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, "application/vnd.example",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layerDesc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Tag(ctx, root, tag); err != nil {
		t.Fatal(err)
	}
	dst, err := r.Repository(repo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oras.Copy(ctx, src, tag, dst, tag, oras.DefaultCopyOptions); err != nil {
		t.Fatalf("oras.Copy push: %v", err)
	}
	return root
}

// pullLayer copies repo:tag into a memory store and returns its one layer.
func pullLayer(t *testing.T, r *Registry, repo, tag string) []byte {
	t.Helper()
	ctx := testContext(t)
	src, err := r.Repository(repo)
	if err != nil {
		t.Fatal(err)
	}
	dst := memory.New()
	root, err := oras.Copy(ctx, src, tag, dst, tag, oras.DefaultCopyOptions)
	if err != nil {
		t.Fatalf("oras.Copy pull: %v", err)
	}
	raw, err := content.FetchAll(ctx, dst, root)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	layer, err := content.FetchAll(ctx, dst, m.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	return layer
}

// eachImpl runs f as a subtest against every implementation.
func eachImpl(t *testing.T, f func(t *testing.T, impl Implementation)) {
	t.Helper()
	for _, impl := range Implementations() {
		t.Run(impl.String(), func(t *testing.T) { f(t, impl) })
	}
}

func TestOrasPushPull(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"distribution/http", nil},
		{"distribution/tls", []Option{WithTLS()}},
		{"ggcr/http", []Option{WithImplementation(GGCR)}},
		{"ggcr/tls", []Option{WithImplementation(GGCR), WithTLS()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(t, tc.opts...)
			tls := strings.HasSuffix(tc.name, "/tls")
			layer := randomBytes(3<<20, 1)
			root := pushArtifact(t, r, "models/tiny", "v1", layer)
			if got := pullLayer(t, r, "models/tiny", "v1"); !bytes.Equal(got, layer) {
				t.Fatal("pulled layer differs from pushed layer")
			}

			// Resolve by digest, and a 404 for what is not there.
			rr, err := r.Repository("models/tiny")
			if err != nil {
				t.Fatal(err)
			}
			if desc, err := rr.Resolve(testContext(t), root.Digest.String()); err != nil || desc.Digest != root.Digest {
				t.Fatalf("resolve by digest: %v %v", desc.Digest, err)
			}
			missing := content.NewDescriptorFromBytes("application/octet-stream", []byte("missing"))
			if _, err := rr.Fetch(testContext(t), missing); !errors.Is(err, errdef.ErrNotFound) {
				t.Fatalf("fetch missing blob: got %v, want ErrNotFound", err)
			}
			if !strings.HasPrefix(r.URL(), map[bool]string{true: "https://", false: "http://"}[tls]) {
				t.Errorf("URL %q", r.URL())
			}
			if got, want := r.Reference("models/tiny", root.Digest.String()), r.Host()+"/models/tiny@"+root.Digest.String(); got != want {
				t.Errorf("Reference = %q, want %q", got, want)
			}
			if got, want := r.Reference("models/tiny", "v1"), r.Host()+"/models/tiny:v1"; got != want {
				t.Errorf("Reference = %q, want %q", got, want)
			}
		})
	}
}

// get sends a GET for the blob with optional extra headers (key, value...).
func get(t *testing.T, c *http.Client, r *Registry, repo string, d digest.Digest, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.URL()+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET blob: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// send does a request with a body and returns the response, closed.
func send(c *http.Client, method, u string, body []byte, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body == nil {
		req.Body = nil
		req.ContentLength = 0
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// startUpload POSTs a new upload session and returns its absolute URL.
func startUpload(t *testing.T, r *Registry, repo string) string {
	t.Helper()
	resp, err := send(r.Client(), http.MethodPost, r.URL()+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %v %v", resp, err)
	}
	return location(t, r, resp)
}

func location(t *testing.T, r *Registry, resp *http.Response) string {
	t.Helper()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(r.URL())
	u := base.ResolveReference(loc)
	if u.Host != r.Host() {
		t.Fatalf("upload Location on host %q, registry is %q", u.Host, r.Host())
	}
	return u.String()
}

// patch sends one chunk with the bare "a-b" Content-Range distribution wants.
func patch(c *http.Client, u string, start int64, chunk []byte) (*http.Response, error) {
	return send(c, http.MethodPatch, u, chunk,
		"Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", start, start+int64(len(chunk))-1))
}

// uploadStatus returns the Range header of GET on the upload URL, and the
// Location to continue from: after a failed PATCH the old URL's _state no
// longer matches the stored size, and distribution answers it with 416.
func uploadStatus(t *testing.T, r *Registry, u string) (string, string) {
	t.Helper()
	resp, err := send(r.Client(), http.MethodGet, u, nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("upload status: %v %v", resp, err)
	}
	return resp.Header.Get("Range"), location(t, r, resp)
}

// holds checks that the upload session holds exactly n > 0 bytes and
// returns the URL to continue from. Distribution is asked (GET on the
// upload URL); ggcr, which cannot be asked, gets an empty PATCH at n,
// which it accepts only at the exact offset it holds.
func holds(t *testing.T, r *Registry, u string, n int64) string {
	t.Helper()
	want := fmt.Sprintf("0-%d", n-1)
	if r.Capabilities().UploadStatus {
		got, loc := uploadStatus(t, r, u)
		if got != want {
			t.Fatalf("upload status: Range %q, want %q", got, want)
		}
		return loc
	}
	resp, err := send(r.Client(), http.MethodPatch, u, []byte{},
		"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", n, n-1))
	if err != nil || resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != want {
		t.Fatalf("empty PATCH at %d: %v %v; want 202 with Range %q", n, resp, err, want)
	}
	return location(t, r, resp)
}

func withQuery(u, key, value string) string {
	p, _ := url.Parse(u)
	q := p.Query()
	q.Set(key, value)
	p.RawQuery = q.Encode()
	return p.String()
}

func TestChunkedUpload(t *testing.T) { eachImpl(t, testChunkedUpload) }

func testChunkedUpload(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(2<<20+17, 2)
	d := digest.FromBytes(data)
	c := r.Client()

	u := startUpload(t, r, "chunks")
	resp, err := patch(c, u, 0, data[:1<<20])
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH 1: %v %v", resp, err)
	}
	u = holds(t, r, location(t, r, resp), 1<<20)
	resp, err = patch(c, u, 1<<20, data[1<<20:])
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH 2: %v %v", resp, err)
	}
	resp, err = send(c, http.MethodPut, withQuery(location(t, r, resp), "digest", d.String()), nil)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	got, err := io.ReadAll(get(t, c, r, "chunks", d).Body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GET after chunked upload: %d bytes, %v", len(got), err)
	}

	s := r.Stats().Kinds
	// ggcr was asked with an empty PATCH instead of a status GET.
	patches, statuses := int64(2), int64(1)
	if impl == GGCR {
		patches, statuses = 3, 0
	}
	if s[UploadPatch].Requests != patches || s[UploadPatch].RequestBodyBytes != int64(len(data)) || s[UploadPatch].Statuses[202] != patches {
		t.Errorf("UploadPatch stats %+v", s[UploadPatch])
	}
	if s[UploadPost].Statuses[202] != 1 || s[UploadPut].Statuses[201] != 1 || s[UploadStatus].Statuses[204] != statuses {
		t.Errorf("stats %+v", s)
	}
}

func TestBasicAuth(t *testing.T) { eachImpl(t, testBasicAuth) }

func testBasicAuth(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl), WithBasicAuth("alice", "secret"))
	layer := randomBytes(1<<20, 3)
	pushArtifact(t, r, "private", "v1", layer)
	if got := pullLayer(t, r, "private", "v1"); !bytes.Equal(got, layer) {
		t.Fatal("pulled layer differs")
	}
	resp, err := send(r.Client(), http.MethodGet, r.URL()+"/v2/", nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("anonymous ping: %v %v", resp, err)
	}
}

func TestTokenAuth(t *testing.T) { eachImpl(t, testTokenAuth) }

func testTokenAuth(t *testing.T, impl Implementation) {
	t.Parallel() // it sleeps out a token's life
	const ttl = 400 * time.Millisecond
	r := New(t, WithImplementation(impl), WithTokenAuth("bob", "hunter2", ttl))
	c := r.Client()

	// Anonymous: 401 with a challenge naming the realm and the scope.
	resp, err := send(c, http.MethodGet, r.URL()+"/v2/some/repo/manifests/latest", nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous: %v %v", resp, err)
	}
	want := fmt.Sprintf(`Bearer realm="%s/token",service="registrytest",scope="repository:some/repo:pull,push"`, r.URL())
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Fatalf("challenge %q, want %q", got, want)
	}
	// Wrong password: no token.
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/token?service=registrytest", nil)
	req.SetBasicAuth("bob", "wrong")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token with a wrong password: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The OAuth2 password grant, as oras-go sends it with ForceAttemptOAuth2.
	form := url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {"hunter2"},
		"service": {"registrytest"}, "client_id": {"test"}}
	tresp, err := c.PostForm(r.URL()+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(tresp.Body).Decode(&tok)
	tresp.Body.Close()
	if err != nil || tresp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("password grant: %d %+v %v", tresp.StatusCode, tok, err)
	}
	req, _ = http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("ping with the token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// oras-go fetches a token and pushes, then pulls.
	layer := randomBytes(1<<20, 4)
	root := pushArtifact(t, r, "secure", "v1", layer)
	if got := pullLayer(t, r, "secure", "v1"); !bytes.Equal(got, layer) {
		t.Fatal("pulled layer differs")
	}
	tokens := r.Stats().Kinds[Token].Requests

	// The token expires; oras-go's auth client gets a 401 and a new token.
	time.Sleep(ttl + 100*time.Millisecond)
	rr, _ := r.Repository("secure")
	if _, err := content.FetchAll(testContext(t), rr, root); err != nil {
		t.Fatalf("fetch after expiry: %v", err)
	}
	if got := r.Stats().Kinds[Token].Requests; got != tokens+1 {
		t.Errorf("token requests: %d after expiry, want %d", got, tokens+1)
	}

	// Expiry in the middle of a push: a Delay after the POST outlives the
	// token, and oras-go sends the PUT with the POST's (now expired) token.
	// rr holds the token it just fetched, so the POST passes on the first try.
	r.Inject(Rule{Kind: UploadPost, Times: 1, Action: Delay(ttl + 100*time.Millisecond)})
	blob := randomBytes(64<<10, 5)
	desc := content.NewDescriptorFromBytes("application/octet-stream", blob)
	err = rr.Push(testContext(t), desc, bytes.NewReader(blob))
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push across token expiry: got %v, want a 401", err)
	}
	if err := rr.Push(testContext(t), desc, bytes.NewReader(blob)); err != nil {
		t.Fatalf("push again: %v", err)
	}
}

package e2e

// Hostile servers: the defects fixed by "watch every registry request",
// "validate every digest", "refuse non-manifest references", "new session
// when the registry cannot report one", "bounded cleanup on cancel", "Wrap
// errors name the blob" and the redaction policy, each proved end to end
// against the real registry (registrytest), with a thin reverse proxy in
// front of it where a lie needs more than a fault action.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

const layerType = "application/vnd.sturdy.test.layer"

// Digests sturdy cannot verify or must not put into a URL or a path.
var badDigests = []digest.Digest{
	digest.Digest("sha999:" + strings.Repeat("ab", 32)),
	"sha256:xyz",
	"sha256:../../../manifests/v1",
}

// 1. Wrap's Fetch refuses a digest it cannot verify before any request:
// the registry sees nothing, and the error names the descriptor.
func TestHostileWrapFetchInvalidDigest(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1000)
	r := seed(t, reg, "baddigest", a)
	w := transfer.Wrap(r, transfer.Options{Retry: fast(3)})
	reg.ResetStats()
	for _, d := range badDigests {
		for _, mt := range []string{layerType, ocispec.MediaTypeImageManifest} {
			t.Run(mt+"/"+string(d), func(t *testing.T) {
				desc := ocispec.Descriptor{MediaType: mt, Digest: d, Size: 1000}
				rc, err := w.Fetch(context.Background(), desc)
				if rc != nil {
					rc.Close()
				}
				if !errors.Is(err, errdef.ErrInvalidDigest) {
					t.Fatalf("err = %v, want errdef.ErrInvalidDigest", err)
				}
				mustFailOn(t, err, d)
				if !strings.Contains(err.Error(), string(d)) {
					t.Fatalf("error does not name the digest: %v", err)
				}
			})
		}
	}
	st := reg.Stats()
	for k, ks := range st.Kinds {
		if ks.Requests > 0 {
			t.Errorf("%d %s request(s) reached the registry", ks.Requests, k)
		}
	}
}

// hostileSource holds a real manifest in an oras memory.Store and serves
// bytes under a digest no honest store could hold: what a hostile mirror
// or cache would do.
type hostileSource struct {
	*memory.Store
	extra map[digest.Digest][]byte
	mu    sync.Mutex
	asked map[digest.Digest]int
}

func (h *hostileSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	h.mu.Lock()
	h.asked[d.Digest]++
	h.mu.Unlock()
	if b, ok := h.extra[d.Digest]; ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	return h.Store.Fetch(ctx, d)
}

func (h *hostileSource) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	if _, ok := h.extra[d.Digest]; ok {
		return true, nil
	}
	return h.Store.Exists(ctx, d)
}

// 1. A manifest that lists a layer under an invalid digest: CopyGraph into
// a caller's store that trusts what it is given fails naming that digest,
// the store receives nothing under it, the healthy sibling is copied and
// the manifest is held back.
func TestHostileCopyGraphInvalidLayerDigest(t *testing.T) {
	for _, bad := range badDigests {
		t.Run(string(bad), func(t *testing.T) {
			ctx := context.Background()
			src := &hostileSource{Store: memory.New(), asked: map[digest.Digest]int{}}
			push := func(d ocispec.Descriptor, b []byte) {
				t.Helper()
				if err := src.Store.Push(ctx, d, bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			cfgBytes := []byte("{}")
			cfg := content.NewDescriptorFromBytes(ocispec.MediaTypeEmptyJSON, cfgBytes)
			push(cfg, cfgBytes)
			goodBytes := bytes.Repeat([]byte("good"), 1000)
			good := content.NewDescriptorFromBytes(layerType, goodBytes)
			push(good, goodBytes)
			evil := []byte("bytes served under a digest nobody can check")
			src.extra = map[digest.Digest][]byte{bad: evil}
			badDesc := ocispec.Descriptor{MediaType: layerType, Digest: bad, Size: int64(len(evil))}
			raw, err := json.Marshal(ocispec.Manifest{
				Versioned: specs.Versioned{SchemaVersion: 2},
				MediaType: ocispec.MediaTypeImageManifest,
				Config:    cfg,
				Layers:    []ocispec.Descriptor{good, badDesc},
			})
			if err != nil {
				t.Fatal(err)
			}
			root := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, raw)
			push(root, raw)

			dst := newMapStore()
			err = transfer.CopyGraph(ctx, src, dst, root, transfer.Options{Retry: fast(3)})
			if err == nil {
				t.Fatal("CopyGraph succeeded with an invalid layer digest")
			}
			mustFailOn(t, err, bad)
			if !errors.Is(err, errdef.ErrInvalidDigest) {
				t.Fatalf("err = %v, want errdef.ErrInvalidDigest", err)
			}
			if !strings.Contains(err.Error(), string(bad)) {
				t.Fatalf("error does not name %s: %v", bad, err)
			}
			if !errors.Is(err, transfer.ErrIncomplete) {
				t.Fatalf("err = %v, want ErrIncomplete", err)
			}
			if dst.has(bad) {
				t.Fatalf("the store received content under %s", bad)
			}
			if n := src.asked[bad]; n != 0 {
				t.Fatalf("the source was asked %d time(s) for %s", n, bad)
			}
			if !dst.has(good.Digest) {
				t.Fatal("the healthy sibling was not copied")
			}
			if dst.has(root.Digest) {
				t.Fatal("manifest pushed although a layer failed")
			}
		})
	}
}

// 2. Every request is watched, time to headers included: a registry that
// never answers one request of each kind costs one StallTimeout and a
// retry, not minutes.
func TestHostileEveryRequestWatched(t *testing.T) {
	const stall = 300 * time.Millisecond
	for _, tc := range []struct {
		kind registrytest.Kind
		pull bool // the registry is the source (else the destination)
		// patchCut breaks the first PATCH: the upload status is asked only
		// after a failure.
		patchCut bool
		// reason is the OnRetry reason of the silent request's attempt;
		// "" for the status query after a broken PATCH, which is not an
		// attempt of its own: the reset is what is retried (and the status
		// asked again).
		reason string
		// graph copies with CopyGraph (no tag): the destination's
		// manifest is looked up with a HEAD first.
		graph bool
	}{
		{kind: registrytest.ManifestHead, graph: true, reason: "stalled"},
		{kind: registrytest.ManifestGet, pull: true, reason: "stalled"},
		{kind: registrytest.BlobHead, reason: "stalled"},
		{kind: registrytest.UploadPost, reason: "stalled"},
		{kind: registrytest.ManifestPut, reason: "stalled"},
		{kind: registrytest.UploadStatus, patchCut: true},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 2*MiB) // >= 1 MiB: the chunked protocol
			name := "watched"
			var target *recorder
			var src oras.ReadOnlyTarget = a.store
			var dst oras.Target
			var check content.ReadOnlyStorage
			if tc.pull {
				seed(t, reg, name, a)
				var r oras.Target
				r, target = recordedRepo(t, reg, name)
				src = r
				layout := newLayout(t)
				dst, check = layout, layout
			} else {
				prePushConfig(t, reg, name, a)
				var r oras.Target
				r, target = recordedRepo(t, reg, name)
				dst, check = r, repo(t, reg, name)
			}
			if tc.patchCut {
				reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.ResetAfter(512 << 10)})
			}
			silent := reg.Inject(registrytest.Rule{Kind: tc.kind, Times: 1, Action: registrytest.Delay(time.Hour)})
			var rs retries
			opts := transfer.Options{Retry: fast(3), StallTimeout: stall}
			opts.Retry.OnRetry = rs.on
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			var err error
			if tc.graph {
				err = transfer.CopyGraph(ctx, src, dst, a.root, opts)
			} else {
				_, err = transfer.Copy(ctx, src, "v1", dst, "", opts)
			}
			took := time.Since(start)
			if err != nil {
				t.Fatalf("copy failed after %s: %v", took, err)
			}
			verifyStore(t, check, a)
			if took > 10*time.Second {
				t.Fatalf("copy took %s: a silent %s must cost about one StallTimeout (%s)", took, tc.kind, stall)
			}
			if n := silent.Applied(); n != 1 {
				t.Fatalf("the silent rule acted on %d %s requests, want 1", n, tc.kind)
			}
			// Trips are recorded as they end: the silent one is the one
			// that ended in an error.
			var cut []trip
			for _, tr := range target.of(tc.kind) {
				if tr.Err != nil {
					cut = append(cut, tr)
				}
			}
			if len(cut) != 1 || cut[0].Took < stall || cut[0].Took > stall+2*time.Second {
				t.Fatalf("%s requests cut: %+v; want one, cut after about %s", tc.kind, cut, stall)
			}
			if r := rs.reasons(); len(r) == 0 || (tc.reason != "" && !contains(r, tc.reason)) {
				t.Fatalf("OnRetry reasons %q, want %q", r, tc.reason)
			}
		})
	}
}

// 2. The documented exemption: the final PUT of an upload may stay silent
// while the registry verifies, for commitPatience (transfer/reqwatch.go:
// StallTimeout + 1 s per 32 MiB, at most the attempt deadline), and no
// longer.
func TestHostileCommitPatience(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	// 0.4 s and 64 MiB leave the slow verify below (1.2 s of delay plus the
	// registry's own hashing) 1.2 s inside the patience: on a loaded 2-core
	// machine running the parallel tests beside this one, 0.3 s and 32 MiB
	// left 0.4 s.
	const (
		stall = 400 * time.Millisecond
		size  = 64 * MiB
	)
	// The attempt deadline derived from 64 MiB is the 5 min floor; the
	// patience is StallTimeout + 2 s.
	patience := stall + time.Duration(size/(32*MiB))*time.Second

	run := func(t *testing.T, delay time.Duration) (*registrytest.Registry, *artifact, *recorder, *retries, time.Duration, error) {
		reg := registrytest.New(t)
		a := newArtifact(t, size)
		prePushConfig(t, reg, "commit", a)
		dst, rec := recordedRepo(t, reg, "commit")
		reg.Inject(registrytest.Rule{Kind: registrytest.UploadPut, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.Delay(delay)})
		rs := &retries{}
		opts := transfer.Options{Retry: fast(3), StallTimeout: stall}
		opts.Retry.OnRetry = rs.on
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		_, err := transfer.Copy(ctx, a.store, "v1", dst, "", opts)
		return reg, a, rec, rs, time.Since(start), err
	}
	layerPut := func(rec *recorder, a *artifact) []trip {
		var out []trip
		for _, tr := range rec.of(registrytest.UploadPut) {
			if tr.Digest == a.layers[0].Digest.String() {
				out = append(out, tr)
			}
		}
		return out
	}

	t.Run("slow verify is not cut", func(t *testing.T) {
		reg, a, rec, rs, _, err := run(t, 3*stall)
		if err != nil {
			t.Fatal(err)
		}
		verifyStore(t, repo(t, reg, "commit"), a)
		puts := layerPut(rec, a)
		if len(puts) != 1 || puts[0].Err != nil || puts[0].Status != http.StatusCreated || puts[0].Took < 3*stall {
			t.Fatalf("layer PUTs %+v: want one answered 201 after >= %s", puts, 3*stall)
		}
		if ri := rs.all(); len(ri) != 0 {
			t.Fatalf("retries %+v: the commit must not be cut", ri)
		}
		if n := reg.Stats().Kinds[registrytest.UploadPut].Statuses[0]; n != 0 {
			t.Fatalf("%d PUT(s) cut before their answer", n)
		}
	})

	t.Run("silent commit is cut after the bound", func(t *testing.T) {
		reg, a, rec, _, took, err := run(t, time.Hour)
		if err != nil {
			// The registry did commit (the Delay holds only its answer):
			// sturdy looks before it sends the blob again.
			t.Fatalf("after %s: %v", took, err)
		}
		verifyStore(t, repo(t, reg, "commit"), a)
		puts := layerPut(rec, a)
		if len(puts) == 0 {
			t.Fatal("no layer PUT recorded")
		}
		first := puts[0]
		if first.Err == nil || first.Took < patience || first.Took > patience+time.Second {
			t.Fatalf("the silent commit ended after %s (err %v, status %d); want cut after %s",
				first.Took, first.Err, first.Status, patience)
		}
		if took > patience+10*time.Second {
			t.Fatalf("copy took %s", took)
		}
	})
}

// 3. A blob GET redirected to a pre-signed storage URL that refuses the
// connection: the URL's secrets appear nowhere a user can see them.
func TestHostilePresignedURLNotLeaked(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1*MiB, 1000)
	seed(t, reg, "presigned", a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	secrets := []string{"TOK1", "TOK2", "SIG1", "SIG2", "SIG3"}
	storage := "http://" + closed + "/bucket/blob?security-token=TOK1&x-oss-signature=SIG1&q-signature=SIG2&x-cos-security-token=TOK2&X-Amz-Signature=SIG3"
	proxy := newThinProxy(t, reg, func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool {
		if registrytest.KindOf(r) != registrytest.BlobGet {
			return false
		}
		p.hits.Add(1)
		http.Redirect(w, r, storage, http.StatusTemporaryRedirect)
		return true
	}, nil)

	ev := &events{}
	tr := progress.NewTracker()
	logs := &lockedBuf{}
	var rs retries
	opts := transfer.Options{Retry: fast(3), Observer: progress.Multi(ev, tr),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	opts.Retry.OnRetry = rs.on
	_, err = transfer.Copy(context.Background(), proxy.repo(t, reg, "presigned"), "v1", newLayout(t), "", opts)
	if err == nil {
		t.Fatal("the copy succeeded with storage refusing connections")
	}
	if proxy.hits.Load() == 0 {
		t.Fatal("no blob GET was redirected")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want the storage's connection refused", err)
	}
	leaks := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s leaks %s: %s", where, s, text)
				return
			}
		}
	}
	leaks("Copy error", err.Error())
	leaks("Copy error %+v", fmt.Sprintf("%+v", err))
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatalf("no *url.Error in %v", err)
	}
	if !strings.Contains(ue.URL, closed) {
		t.Fatalf("*url.Error URL %q is not the storage URL", ue.URL)
	}
	leaks("*url.Error URL", ue.URL)
	leaks("*url.Error", ue.Error())
	ev.mu.Lock()
	all := append([]progress.Event(nil), ev.all...)
	ev.mu.Unlock()
	for _, e := range all {
		leaks(e.Kind.String()+" event Reason", e.Reason)
		if e.Err != nil {
			leaks(e.Kind.String()+" event Err", e.Err.Error())
		}
	}
	if len(ev.of(progress.Retrying)) == 0 || len(ev.of(progress.Failed)) == 0 {
		t.Fatalf("want Retrying and Failed events, got %d and %d", len(ev.of(progress.Retrying)), len(ev.of(progress.Failed)))
	}
	leaks("Tracker.Summary", fmt.Sprintf("%+v", tr.Summary()))
	leaks("Tracker.Summary.String", tr.Summary().String())
	leaks("Tracker.Snapshot", fmt.Sprintf("%+v", tr.Snapshot()))
	if logs.String() == "" {
		t.Fatal("nothing logged")
	}
	leaks("Options.Logger output", logs.String())
	infos := rs.all()
	if len(infos) == 0 {
		t.Fatal("OnRetry never called")
	}
	for _, ri := range infos {
		leaks("RetryInfo.Err", ri.Err.Error())
		leaks("RetryInfo.Reason", ri.Reason)
	}
}

// 4. Cancel returns within a second even when the registry never answers
// the DELETE that abandons the upload session.
func TestHostileCancelWithSilentUploadDelete(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 16*MiB)
	dst := repo(t, reg, "cancel-delete")
	reg.SetBandwidth(0, 4*MiB) // 4 s for the blob: in flight when cancelled
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadDelete, Action: registrytest.Delay(time.Hour)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt atomic.Int64
	layer := a.layers[0].Digest
	opts := transfer.Options{Retry: fast(3), Observer: progress.Func(func(e progress.Event) {
		if e.Kind == progress.Progressed && e.Desc.Digest == layer && e.Offset >= 2*MiB && cancelledAt.Load() == 0 {
			cancelledAt.Store(time.Now().UnixNano())
			cancel()
		}
	})}
	_, err := transfer.Copy(ctx, a.store, "v1", dst, "", opts)
	returned := time.Now()
	at := cancelledAt.Load()
	if at == 0 {
		t.Fatalf("the upload never got under way: %v", err)
	}
	if d := returned.Sub(time.Unix(0, at)); d > time.Second {
		t.Fatalf("Copy returned %s after the cancel, want < 1s", d)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// sturdy did try to abandon the session, and the registry was deaf.
	if !waitFor(2*time.Second, func() bool { return reg.Stats().Kinds[registrytest.UploadDelete].Requests > 0 }) {
		t.Fatal("no upload DELETE reached the registry")
	}
	if ok, _ := dst.Exists(context.Background(), a.root); ok {
		t.Fatal("manifest pushed by a cancelled copy")
	}
}

// 5. A captive portal answering every manifest request with 200 text/html:
// Wrap in oras.Copy refuses it as transfer.Copy does, and nothing is
// tagged.
func TestHostileCaptivePortalIsNotAManifest(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1000)
	src := seed(t, reg, "portal", a)
	page := []byte("<html><body><h1>Welcome to Hotel Wi-Fi</h1><a href=/login>Log in</a></body></html>")
	reg.Inject(registrytest.Rule{Kind: registrytest.ManifestGet | registrytest.ManifestHead,
		Action: registrytest.Respond(http.StatusOK).WithBody("text/html; charset=utf-8", page)})
	opts := transfer.Options{Retry: fast(3)}
	ctx := context.Background()

	t.Run("Wrap in oras.Copy", func(t *testing.T) {
		dst := newLayout(t)
		_, err := oras.Copy(ctx, transfer.Wrap(src, opts), "v1", dst, "v1", oras.DefaultCopyOptions)
		if !errors.Is(err, transfer.ErrNotManifest) {
			t.Fatalf("err = %v, want transfer.ErrNotManifest", err)
		}
		if _, err := dst.Resolve(ctx, "v1"); err == nil {
			t.Fatal("a portal page was tagged")
		}
	})
	t.Run("transfer.Copy", func(t *testing.T) {
		dst := newLayout(t)
		_, err := transfer.Copy(ctx, src, "v1", dst, "", opts)
		if err == nil {
			t.Fatal("a portal page was copied as a manifest")
		}
		if _, err := dst.Resolve(ctx, "v1"); err == nil {
			t.Fatal("a portal page was tagged")
		}
		// Copy resolves with a HEAD, which a portal answers as it answers
		// the GET: 200 text/html. The caller must be able to tell that
		// the reference is not a manifest, as through Wrap.
		if !errors.Is(err, transfer.ErrNotManifest) {
			t.Fatalf("err = %v, want transfer.ErrNotManifest", err)
		}
	})
}

// 5. Wrap's Push errors name the blob, as Copy's do.
func TestHostileWrapPushErrorNamesBlob(t *testing.T) {
	for _, size := range []int{1000, 2 * MiB} { // monolithic, chunked
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			reg := registrytest.New(t)
			reg.Inject(registrytest.Rule{Kind: registrytest.UploadPost, Action: registrytest.Respond(http.StatusForbidden)})
			a := newArtifact(t, size)
			l := a.layers[0]
			w := transfer.Wrap(repo(t, reg, "denied"), transfer.Options{Retry: fast(3)})
			err := w.Push(context.Background(), l, bytes.NewReader(a.data[l.Digest]))
			be := mustFailOn(t, err, l.Digest)
			if be.Attempts != 1 {
				t.Fatalf("attempts = %d, want 1 (403 is permanent)", be.Attempts)
			}
			if !strings.Contains(err.Error(), l.Digest.String()) {
				t.Fatalf("error text does not name the blob: %v", err)
			}
		})
	}
}

// 6a. A registry that answers a ranged GET with a 206 whose Content-Range
// starts elsewhere: after a cut, the blob is read again from byte 0, with
// a Note, and verifies.
func TestHostileBadContentRangeDegrades(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	seed(t, reg, "bad206", a)
	proxy := newThinProxy(t, reg, nil, func(p *thinProxy, resp *http.Response) error {
		if resp.StatusCode != http.StatusPartialContent || registrytest.KindOf(resp.Request) != registrytest.BlobGet {
			return nil
		}
		var start, end, size int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &size); err != nil || start == 0 {
			return nil
		}
		p.hits.Add(1)
		resp.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start-1000, end, size))
		return nil
	})
	pullWithCutAndDegrade(t, reg, proxy, a, "bad206")
}

// 6b. A registry that refuses every ranged GET with 416 (it serves some
// Range forms only): the same degradation.
func TestHostileRangeRefusedDegrades(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	seed(t, reg, "range416", a)
	proxy := newThinProxy(t, reg, func(p *thinProxy, w http.ResponseWriter, r *http.Request) bool {
		if registrytest.KindOf(r) != registrytest.BlobGet || r.Header.Get("Range") == "" {
			return false
		}
		p.hits.Add(1)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", a.layers[0].Size))
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return true
	}, nil)
	pullWithCutAndDegrade(t, reg, proxy, a, "range416")
}

func pullWithCutAndDegrade(t *testing.T, reg *registrytest.Registry, proxy *thinProxy, a *artifact, name string) {
	t.Helper()
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.ResetAfter(1 * MiB)})
	ev := &events{}
	dst := newLayout(t)
	if _, err := transfer.Copy(context.Background(), proxy.repo(t, reg, name), "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if proxy.hits.Load() == 0 {
		t.Fatal("the proxy never lied: no ranged GET after the cut")
	}
	if len(ev.notesContaining("reading from byte 0")) == 0 {
		t.Fatalf("no Note about reading from byte 0; notes %q", ev.reasons(progress.Note))
	}
	if f := ev.of(progress.Failed); len(f) != 0 {
		t.Fatalf("failed: %v", f[0].Err)
	}
}

// pushWithStatusLie pushes a (one layer) through proxy after a PATCH cut.
func pushWithStatusLie(t *testing.T, reg *registrytest.Registry, proxy *thinProxy, a *artifact, name string) *events {
	t.Helper()
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.ResetAfter(1 * MiB)})
	ev := &events{}
	if _, err := transfer.Copy(context.Background(), a.store, "v1", proxy.repo(t, reg, name), "", transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, repo(t, reg, name), a)
	if proxy.hits.Load() == 0 {
		t.Fatal("the proxy never lied: no upload status query")
	}
	if f := ev.of(progress.Failed); len(f) != 0 {
		t.Fatalf("failed: %v", f[0].Err)
	}
	return ev
}

func isUploadStatusGet(r *http.Request) bool {
	return r.Method == http.MethodGet && registrytest.KindOf(r) == registrytest.UploadStatus
}

// 6c. An upload status claiming more bytes than the blob has: nothing it
// says about the session is trusted; a new session from byte 0, a Note, a
// verified blob, and no event reports an offset beyond the blob.
func TestHostileImpossibleUploadOffset(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	size := a.layers[0].Size
	proxy := newThinProxy(t, reg, nil, func(p *thinProxy, resp *http.Response) error {
		if isUploadStatusGet(resp.Request) && resp.Header.Get("Range") != "" {
			p.hits.Add(1)
			resp.Header.Set("Range", fmt.Sprintf("0-%d", 2*size))
		}
		return nil
	})
	ev := pushWithStatusLie(t, reg, proxy, a, "impossible")
	if len(ev.notesContaining("beyond the blob's size")) == 0 {
		t.Fatalf("no Note about the impossible offset; notes %q", ev.reasons(progress.Note))
	}
	for _, k := range []progress.Kind{progress.Retrying, progress.Resumed, progress.Progressed} {
		for _, e := range ev.of(k) {
			if e.Offset > e.Desc.Size {
				t.Fatalf("%s event at offset %d of %d bytes", k, e.Offset, e.Desc.Size)
			}
		}
	}
	if r := ev.of(progress.Resumed); len(r) != 0 {
		t.Fatalf("resumed at %d: want a new session from byte 0", r[0].Offset)
	}
}

// 6d. An upload status query answered 400 (a registry without one): a new
// session from byte 0 with a Note, not a failed blob.
func TestHostileUploadStatusUnsupported(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	proxy := newThinProxy(t, reg, answerUploadStatus(http.StatusBadRequest, "UNSUPPORTED", "The operation is unsupported."), nil)
	reg.ResetStats()
	ev := pushWithStatusLie(t, reg, proxy, a, "nostatus")
	if len(ev.notesContaining("cannot report an upload's offset")) == 0 {
		t.Fatalf("no Note about the missing status; notes %q", ev.reasons(progress.Note))
	}
	if r := ev.of(progress.Resumed); len(r) != 0 {
		t.Fatalf("resumed at %d: want a new session from byte 0", r[0].Offset)
	}
	for _, e := range ev.of(progress.Retrying) {
		if e.Desc.Digest == a.layers[0].Digest && e.Offset != 0 {
			t.Fatalf("retrying at offset %d, want 0", e.Offset)
		}
	}
	// The config's POST, the layer's first session and its new one.
	if n := reg.Stats().Kinds[registrytest.UploadPost].Requests; n < 3 {
		t.Fatalf("%d upload sessions, want a new one for the layer", n)
	}
}

// 6e. A manifest that fails is called a manifest in its error.
func TestHostileManifestErrorSaysManifest(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind registrytest.Kind
	}{{"pull", registrytest.ManifestGet}, {"push", registrytest.ManifestPut}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 1000)
			reg.Inject(registrytest.Rule{Kind: tc.kind, Action: registrytest.Respond(http.StatusForbidden)})
			var err error
			if tc.kind == registrytest.ManifestGet {
				// By digest: a tag's manifest is read once, when the tag
				// is resolved.
				src := seed(t, reg, "manifest-err", a)
				err = transfer.CopyGraph(context.Background(), src, newLayout(t), a.root, transfer.Options{Retry: fast(3)})
			} else {
				_, err = transfer.Copy(context.Background(), a.store, "v1", repo(t, reg, "manifest-err"), "", transfer.Options{Retry: fast(3)})
			}
			be := mustFailOn(t, err, a.root.Digest)
			if msg := be.Error(); !strings.HasPrefix(msg, "manifest "+a.root.Digest.String()) {
				t.Fatalf("error text %q, want it to start with \"manifest %s\"", msg, a.root.Digest)
			}
		})
	}
}

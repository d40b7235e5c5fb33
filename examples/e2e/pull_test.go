package e2e

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

func TestPullCleanLink(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 3*MiB, 1000, 2*MiB)
	src := seed(t, reg, "clean", a)
	dst := newLayout(t)
	root, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if root.Digest != a.root.Digest {
		t.Fatalf("root %s", root.Digest)
	}
	verifyStore(t, dst, a)
	if d, err := dst.Resolve(context.Background(), "v1"); err != nil || d.Digest != a.root.Digest {
		t.Fatalf("tag: %v", err)
	}
}

// A link that resets every 4 MiB: the pull resumes with ranged GETs and
// finishes with MaxAttempts 3, moving the payload about once.
func TestPullResumesAcrossResets(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 32*MiB)
	src := seed(t, reg, "resets", a)
	reg.ResetStats()
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(4 * MiB)})
	tr := progress.NewTracker()
	ev := &events{}
	dst := newLayout(t)
	// One connection: this is the single stream's resume (parallel_test.go
	// has the ranges').
	_, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: progress.Multi(tr, ev), PullConnections: 1})
	if err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	st := reg.Stats()
	if r := ratio(st.Kinds[registrytest.BlobGet].ResponseBodyBytes, payload(a)); r > 1.01 {
		t.Fatalf("blob GET body bytes / payload = %.3f, want ~1 (resume, not restart)", r)
	}
	if r := ratio(st.WireDown, payload(a)); r > 1.05 {
		t.Fatalf("wire down / payload = %.3f", r)
	}
	resumed := ev.of(progress.Resumed)
	if len(resumed) < 7 {
		t.Fatalf("want >= 7 resumes, got %d", len(resumed))
	}
	for i, e := range resumed {
		if want := int64(i+1) * 4 * MiB; e.Offset != want {
			t.Errorf("resume %d at %d, want %d", i, e.Offset, want)
		}
	}
	if !contains(ev.reasons(progress.Retrying), "connection reset") {
		t.Fatalf("retry reasons %v", ev.reasons(progress.Retrying))
	}
	if s := tr.Summary(); s.Resumes < 7 {
		t.Fatalf("tracker: %s", s)
	}
}

// Resets at the edges: the first byte, inside the first chunk, and just
// before the last byte.
func TestPullResetAtEdges(t *testing.T) {
	const size = 3 * MiB
	for _, tc := range []struct {
		name  string
		after int64
	}{{"first byte", 0}, {"mid", size / 2}, {"last byte", size - 1}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, size)
			src := seed(t, reg, "edges", a)
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.ResetAfter(tc.after)})
			reg.ResetStats()
			dst := newLayout(t)
			if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3)}); err != nil {
				t.Fatal(err)
			}
			verifyStore(t, dst, a)
			if r := ratio(reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes, size); r > 1.001 {
				t.Fatalf("body bytes / payload = %.4f", r)
			}
		})
	}
}

// A link that never gets past byte N fails after MaxAttempts, names the
// blob, lets the sibling finish, and pushes no manifest and no tag.
func TestPullNoProgressFailsAndIsolates(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB, 2*MiB)
	src := seed(t, reg, "isolate", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Action: registrytest.ResetAfter(100 << 10)})
	dst := newLayout(t)
	_, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(4)})
	be := mustFailOn(t, err, a.layers[0].Digest)
	if be.Attempts != 4 {
		t.Fatalf("attempts = %d, want 4", be.Attempts)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v", err)
	}
	assertIsolated(t, err, dst, a, a.layers[1])
}

// A registry that ignores Range: the pull still finishes, re-reading the
// beginning of the blob (counted on the wire) instead of restarting the
// destination.
func TestPullRegistryIgnoresRange(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 8*MiB)
	src := seed(t, reg, "norange", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.IgnoreRange()})
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 2, Action: registrytest.ResetAfter(3 * MiB)})
	reg.ResetStats()
	tr := progress.NewTracker()
	dst := newLayout(t)
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(4), Observer: tr}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	body := reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes - a.root.Size - 2 // less the config blob
	// 3 MiB; then a 200 read again from 0 and reset at 3 MiB, no progress;
	// then all 8 MiB: 14 MiB for 8.
	if r := ratio(body, 8*MiB); r < 1.7 || r > 1.8 {
		t.Fatalf("body / payload = %.3f, want 1.75", r)
	}
	if s := tr.Summary(); s.Overhead() < 1.7 {
		t.Fatalf("the tracker must show the re-read bytes as wire: %s", s)
	}
}

func TestPullRetryAfterHonoured(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 1*MiB)
			src := seed(t, reg, "ra", a)
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 2,
				Action: registrytest.Respond(status).WithRetryAfter(1 * time.Second)})
			var mu sync.Mutex
			var waits []time.Duration
			opts := transfer.Options{Retry: fast(3)}
			opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) { // called for every blob, concurrently
				mu.Lock()
				waits = append(waits, ri.Backoff)
				mu.Unlock()
			}
			// Cap the wait so the test does not sleep the second: the cap
			// shows the header was read (the computed backoff is <= 5 ms).
			opts.Retry.MaxRetryAfter = 200 * time.Millisecond
			dst := newLayout(t)
			if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", opts); err != nil {
				t.Fatal(err)
			}
			if len(waits) != 2 || waits[0] != 200*time.Millisecond || waits[1] != 200*time.Millisecond {
				t.Fatalf("waits = %v, want two capped Retry-After waits of 200ms", waits)
			}
		})
	}
}

func TestPullRetryAfterUncapped(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 100<<10)
	src := seed(t, reg, "ra2", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1,
		Action: registrytest.Respond(http.StatusServiceUnavailable).WithRetryAfter(time.Second)})
	start := time.Now()
	if _, err := transfer.Copy(context.Background(), src, "v1", newLayout(t), "", transfer.Options{Retry: fast(3)}); err != nil {
		t.Fatal(err)
	}
	// The server asked for 1 s, far beyond MaxBackoff (5 ms): it is honoured.
	if d := time.Since(start); d < time.Second {
		t.Fatalf("finished after %s, before the Retry-After of 1s", d)
	}
}

func TestPullAuthErrorsFailOnFirstAttempt(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 1*MiB, 1000)
			src := seed(t, reg, "denied", a)
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Action: registrytest.Respond(status)})
			_, err := transfer.Copy(context.Background(), src, "v1", newLayout(t), "", transfer.Options{Retry: fast(5)})
			be := mustFailOn(t, err, a.layers[0].Digest)
			if be.Attempts != 1 || retrypolicy.IsRetryable(be.Err) {
				t.Fatalf("attempts %d, err %v", be.Attempts, be.Err)
			}
		})
	}
}

func TestPullStallIsCutAndResumed(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	src := seed(t, reg, "stall", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.Stall(2 * MiB)})
	ev := &events{}
	opts := transfer.Options{Retry: fast(3), StallTimeout: 300 * time.Millisecond, Observer: ev}
	start := time.Now()
	if _, err := transfer.Copy(context.Background(), src, "v1", newLayout(t), "", opts); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
	if !contains(ev.reasons(progress.Retrying), "stalled") {
		t.Fatalf("retry reasons %v", ev.reasons(progress.Retrying))
	}
	if r := ev.of(progress.Resumed); len(r) != 1 || r[0].Offset != 2*MiB {
		t.Fatalf("resumed %v", r)
	}
}

func TestPullTrickleIsCut(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	src := seed(t, reg, "trickle", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.Trickle(1*MiB, 200)})
	ev := &events{}
	opts := transfer.Options{Retry: fast(3), Observer: ev,
		LowSpeedLimit: 64 << 10, LowSpeedTime: 500 * time.Millisecond}
	if _, err := transfer.Copy(context.Background(), src, "v1", newLayout(t), "", opts); err != nil {
		t.Fatal(err)
	}
	if !contains(ev.reasons(progress.Retrying), "too slow") {
		t.Fatalf("retry reasons %v", ev.reasons(progress.Retrying))
	}
}

// A byte flipped on the wire is caught by the digest and never committed;
// once, it costs one restart; always, the blob fails.
func TestPullCorruptByte(t *testing.T) {
	for _, times := range []int{1, 0} {
		reg := registrytest.New(t)
		a := newArtifact(t, 2*MiB)
		src := seed(t, reg, "corrupt", a)
		reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: times, Action: registrytest.Corrupt(MiB)})
		dst := newLayout(t)
		_, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3)})
		if times == 1 {
			if err != nil {
				t.Fatalf("a single corruption should cost one restart: %v", err)
			}
			verifyStore(t, dst, a)
			continue
		}
		mustFailOn(t, err, a.layers[0].Digest)
		if !errors.Is(err, content.ErrMismatchedDigest) {
			t.Fatalf("err = %v", err)
		}
		if ok, _ := dst.Exists(context.Background(), a.layers[0]); ok {
			t.Fatal("corrupted blob committed")
		}
	}
}

// A corrupted resumed stream: the first connection breaks, the resumed one
// carries a flipped byte. The digest over the joined stream catches it and
// the blob restarts once from byte 0.
func TestPullCorruptedResumedStream(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	src := seed(t, reg, "corrupt-resume", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.ResetAfter(MiB)})
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Skip: 1, Times: 1, Action: registrytest.Corrupt(3 * MiB)})
	ev := &events{}
	dst := newLayout(t)
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if !contains(ev.reasons(progress.Note), "digest mismatch after a resumed download; restarting from byte 0") {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
}

func TestPullCancelMidTransfer(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 8*MiB)
	src := seed(t, reg, "cancel", a)
	reg.SetBandwidth(2*MiB, 0)
	ctx, cancel := context.WithCancel(context.Background())
	opts := transfer.Options{Observer: progress.Func(func(e progress.Event) {
		if e.Kind == progress.Progressed && e.Offset >= MiB {
			cancel()
		}
	})}
	dst := newLayout(t)
	_, err := transfer.Copy(ctx, src, "v1", dst, "", opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if _, err := dst.Resolve(context.Background(), "v1"); err == nil {
		t.Fatal("tagged after cancel")
	}
}

func TestPullCancelDuringBackoff(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 1*MiB)
	src := seed(t, reg, "cancel-backoff", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.Respond(http.StatusServiceUnavailable)})
	ctx, cancel := context.WithCancel(context.Background())
	opts := transfer.Options{Retry: retrypolicy.Config{InitialBackoff: time.Hour, MaxBackoff: time.Hour},
		Observer: progress.Func(func(e progress.Event) {
			if e.Kind == progress.Retrying {
				cancel()
			}
		})}
	start := time.Now()
	_, err := transfer.Copy(ctx, src, "v1", newLayout(t), "", opts)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("err = %v after %s", err, time.Since(start))
	}
}

// An existing oras.Copy pipeline, its targets wrapped.
func TestWrapOrasCopyHealsResets(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 6*MiB, 3*MiB)
	src := seed(t, reg, "wrap", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(2 * MiB)})
	dst := newLayout(t)

	if _, err := oras.Copy(context.Background(), src, "v1", newLayout(t), "v1", oras.DefaultCopyOptions); err == nil {
		t.Fatal("plain oras.Copy unexpectedly survived the resets")
	}
	opts := transfer.Options{Retry: fast(3)}
	if _, err := oras.Copy(context.Background(), transfer.Wrap(src, opts), "v1", transfer.Wrap(dst, opts), "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
}

// The acceptance case of the design: 256 MiB over a link that resets every
// 32 MiB finishes with MaxAttempts 3, in both directions, moving the
// payload once. The blob is streamed from a PRNG into an OCI layout, as a
// model on disk would be, never held in memory.
func TestLargeBlobResetEvery32MiB(t *testing.T) {
	ctx := context.Background()
	reg := registrytest.New(t)
	src := newLayout(t)
	const size = 256 * MiB
	layer := streamBlob(t, src, size, 1)
	root, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, "application/vnd.sturdy.test",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Tag(ctx, root, "v1"); err != nil {
		t.Fatal(err)
	}
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch | registrytest.BlobGet, Action: registrytest.ResetEvery(32 * MiB)})
	dst := repo(t, reg, "large")
	opts := transfer.Options{Retry: fast(3)}
	if _, err := transfer.Copy(ctx, src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	if r := ratio(reg.Stats().Kinds[registrytest.UploadPatch].RequestBodyBytes, size); r > 1.01 {
		t.Fatalf("push: PATCH bytes / payload = %.3f", r)
	}
	reg.ResetStats()
	layout := newLayout(t)
	if _, err := transfer.Copy(ctx, dst, "v1", layout, "", opts); err != nil {
		t.Fatal(err)
	}
	if r := ratio(reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes, size); r > 1.01 {
		t.Fatalf("pull: GET bytes / payload = %.3f", r)
	}
	// oci.Store verified the digest as it stored the blob; read it back
	// verified once more.
	rc, err := layout.Fetch(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, content.NewVerifyReader(rc, layer)); err != nil {
		t.Fatal(err)
	}
}

// streamBlob pushes size bytes of a seeded PRNG into s without holding them.
func streamBlob(t testing.TB, s content.Pusher, size int64, seed uint64) ocispec.Descriptor {
	t.Helper()
	newStream := func() io.Reader {
		return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size)
	}
	d := digest.Canonical.Digester()
	if _, err := io.Copy(d.Hash(), newStream()); err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: "application/vnd.sturdy.test.layer", Digest: d.Digest(), Size: size}
	if err := s.Push(context.Background(), desc, newStream()); err != nil {
		t.Fatal(err)
	}
	return desc
}

// A repository whose client retries underneath (oras-go's retry.Transport,
// as in auth.DefaultClient): sturdy strips it, so each of its attempts is
// one request; KeepInnerRetries keeps it, and the attempts multiply.
func TestOneRetryLayer(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	for _, keep := range []bool{false, true} {
		reg := registrytest.New(t)
		a := newArtifact(t, 1000)
		src := seed(t, reg, "layers", a)
		inner := retry.NewTransport(reg.Client().Transport)
		inner.Policy = func() retry.Policy {
			return &retry.GenericPolicy{Retryable: retry.DefaultPredicate, Backoff: retry.DefaultBackoff,
				MinWait: time.Millisecond, MaxWait: time.Millisecond, MaxRetry: 5}
		}
		src.Client = &auth.Client{Client: &http.Client{Transport: inner}, Cache: auth.NewCache()}
		reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Action: registrytest.Respond(http.StatusServiceUnavailable)})
		reg.ResetStats()
		_, err := transfer.Copy(context.Background(), src, "v1", newLayout(t), "", transfer.Options{Retry: fast(3), KeepInnerRetries: keep})
		be := mustFailOn(t, err, a.layers[0].Digest)
		got := reg.Stats().Kinds[registrytest.BlobGet].Statuses[http.StatusServiceUnavailable]
		want := int64(3)
		if keep {
			want = 3 * 6
		}
		if be.Attempts != 3 || got != want {
			t.Errorf("keep=%v: %d attempts, %d requests; want 3 attempts, %d requests", keep, be.Attempts, got, want)
		}
		if src.Client.(*auth.Client).Client.Transport != inner {
			t.Fatal("the caller's repository was modified")
		}
	}
}

// A source that waits out a Retry-After longer than twice StallTimeout does
// not make its destination look stalled: the destination's watchdog only
// runs while it is not waiting on the source. (Found by the benchmark: the
// blob failed after one attempt with "stalled".)
func TestDestinationNotCutWhileSourceWaits(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	src := seed(t, reg, "waits", a)
	opts := transfer.Options{Retry: fast(3), StallTimeout: 200 * time.Millisecond}
	t.Run("into a layout", func(t *testing.T) {
		reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1,
			Action: registrytest.Respond(http.StatusServiceUnavailable).WithRetryAfter(time.Second)})
		dst := newLayout(t)
		if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", opts); err != nil {
			t.Fatal(err)
		}
		verifyStore(t, dst, a)
	})
	t.Run("into another registry", func(t *testing.T) {
		reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Skip: 1, Times: 1,
			Action: registrytest.Respond(http.StatusServiceUnavailable).WithRetryAfter(time.Second)})
		// The first GET goes through and is reset mid-blob; the reopen
		// gets the 503 while the upload waits for bytes.
		reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1,
			Action: registrytest.ResetAfter(MiB + 1)})
		other := registrytest.New(t)
		dst := repo(t, other, "waits")
		if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", opts); err != nil {
			t.Fatal(err)
		}
		verifyStore(t, dst, a)
	})
}

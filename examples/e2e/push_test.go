package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

func TestPushCleanLink(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 3*MiB, 1000, 2*MiB)
	dst := repo(t, reg, "push-clean")
	root, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if root.Digest != a.root.Digest {
		t.Fatal("root differs")
	}
	verifyStore(t, dst, a)
	if d, err := dst.Resolve(context.Background(), "v1"); err != nil || d.Digest != a.root.Digest {
		t.Fatalf("tag: %v", err)
	}
	// The two layers of 1 MiB and more used the chunked protocol; the
	// small ones (config, 1000 bytes) one POST and PUT.
	if n := reg.Stats().Kinds[registrytest.UploadPatch].Requests; n != 2 {
		t.Fatalf("%d PATCH requests, want 2", n)
	}
}

// An upload link that resets every 4 MiB: each attempt asks the registry
// where it stands and continues from there, with MaxAttempts 3.
func TestPushResumesAcrossResets(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 32*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(4 * MiB)})
	ev := &events{}
	tr := progress.NewTracker()
	dst := repo(t, reg, "push-resets")
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: progress.Multi(ev, tr)}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	st := reg.Stats()
	if r := ratio(st.Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)); r > 1.01 {
		t.Fatalf("PATCH body bytes / payload = %.3f, want ~1", r)
	}
	if r := ratio(st.WireUp, payload(a)); r > 1.05 {
		t.Fatalf("wire up / payload = %.3f", r)
	}
	if len(ev.of(progress.Resumed)) < 7 {
		t.Fatalf("resumes: %d", len(ev.of(progress.Resumed)))
	}
	// The tracker counts what was handed to the connection: a reset
	// loses what sat in the socket buffers (a few MiB on loopback), so it
	// reads above the registry's count by up to that much per reset.
	s := tr.Summary()
	if s.Payload != payload(a)+a.root.Size+2 || s.Wire < s.Payload ||
		s.Wire > s.Payload+int64(len(ev.of(progress.Retrying)))*8*MiB {
		t.Fatalf("tracker: %s", s)
	}
}

func TestPushResetAtEdges(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	const size = 3 * MiB
	for _, tc := range []struct {
		name  string
		after int64
	}{{"first byte", 0}, {"mid", size / 2}, {"last byte", size - 1}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, size)
			reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Digest: "", Times: 1, Action: registrytest.ResetAfter(tc.after)})
			dst := repo(t, reg, "push-edges")
			if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(3)}); err != nil {
				t.Fatal(err)
			}
			verifyStore(t, dst, a)
			if r := ratio(reg.Stats().Kinds[registrytest.UploadPatch].RequestBodyBytes, size); r > 1.01 {
				t.Fatalf("PATCH bytes / payload = %.3f", r)
			}
		})
	}
}

func TestPushNoProgressFails(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB, 1000)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(100 << 10)})
	dst := repo(t, reg, "push-noprogress")
	_, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(3)})
	be := mustFailOn(t, err, a.layers[0].Digest)
	if be.Attempts != 3 {
		t.Fatalf("attempts = %d", be.Attempts)
	}
	assertIsolated(t, err, dst, a, a.layers[1])
}

func TestPushStallAndTrickle(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	for _, tc := range []struct {
		name     string
		action   registrytest.Action
		lowLimit int64
		reason   string
	}{
		// The registry stops reading after 1.5 MiB.
		{"stall", registrytest.Stall(3 * MiB / 2), -1, "stalled"},
		// The registry reads 64 KiB/s after 1.5 MiB: slow enough for the
		// low-speed rule, fast enough (once the socket buffers are full,
		// 32 KiB every half second) not to look stalled.
		{"trickle", registrytest.Trickle(3*MiB/2, 64<<10), 1 << 20, "too slow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 16*MiB)
			reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: tc.action})
			ev := &events{}
			opts := transfer.Options{Retry: fast(3), Observer: ev, StallTimeout: 600 * time.Millisecond,
				LowSpeedLimit: tc.lowLimit, LowSpeedTime: 500 * time.Millisecond}
			dst := repo(t, reg, "push-"+tc.name)
			// The layer alone, so that the rule's one time is its PATCH.
			if err := transfer.CopyGraph(context.Background(), a.store, dst, a.layers[0], opts); err != nil {
				t.Fatal(err)
			}
			got, err := content.FetchAll(context.Background(), dst, a.layers[0])
			if err != nil || !bytes.Equal(got, a.data[a.layers[0].Digest]) {
				t.Fatalf("layer in the registry differs: %v", err)
			}
			if !contains(ev.reasons(progress.Retrying), tc.reason) {
				t.Fatalf("reasons %v", ev.reasons(progress.Retrying))
			}
			if r := ev.of(progress.Resumed); len(r) == 0 || r[0].Offset < 3*MiB/2 {
				t.Fatalf("resumed %v", r)
			}
		})
	}
}

// A byte flipped in an upload: the registry rejects the digest at the PUT,
// nothing is committed, and the upload restarts once from byte 0.
func TestPushCorruptByte(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.Corrupt(MiB)})
	ev := &events{}
	dst := repo(t, reg, "push-corrupt")
	// The layer alone, so that the rule's one time is its PATCH.
	if err := transfer.CopyGraph(context.Background(), a.store, dst, a.layers[0], transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	got, err := content.FetchAll(context.Background(), dst, a.layers[0])
	if err != nil || !bytes.Equal(got, a.data[a.layers[0].Digest]) {
		t.Fatalf("layer in the registry differs: %v", err)
	}
	if !contains(ev.reasons(progress.Note), "registry rejected the digest; restarting the upload from byte 0") {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
}

func TestPushRetryAfterAndBursts(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 1*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPost, Times: 2, Action: registrytest.Respond(http.StatusTooManyRequests).WithRetryAfter(time.Second)})
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 2, Action: registrytest.Respond(http.StatusBadGateway)})
	opts := transfer.Options{Retry: fast(5)}
	opts.Retry.MaxRetryAfter = 100 * time.Millisecond
	dst := repo(t, reg, "push-429")
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
}

func TestPushDeniedFailsFirstAttempt(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPost, Action: registrytest.Respond(http.StatusForbidden)})
	dst := repo(t, reg, "push-denied")
	_, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(5)})
	var be *transfer.BlobError
	if !errors.As(err, &be) || be.Attempts != 1 {
		t.Fatalf("err = %v", err)
	}
}

// A registry that does not take PATCH: sturdy falls back to a monolithic
// upload and says so.
// A registry that cannot take a PATCH (405, 501, or like Google Artifact
// Registry no chunked uploads at all: 400, 404, 415) gets a monolithic
// upload, and a Note says so.
func TestPushFallsBackToMonolithic(t *testing.T) {
	for _, status := range []int{http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusNotFound, http.StatusNotImplemented} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 2*MiB)
			// A route the registry does not have, not a lost session:
			// no BLOB_UPLOAD_UNKNOWN.
			reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.Respond(status).WithBody("text/plain", []byte("404 page not found"))})
			ev := &events{}
			dst := repo(t, reg, "push-mono")
			if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
				t.Fatal(err)
			}
			verifyStore(t, dst, a)
			if !slices.ContainsFunc(ev.reasons(progress.Note), func(r string) bool { return strings.Contains(r, "monolithic") }) {
				t.Fatalf("no Note about the fallback: %v", ev.reasons(progress.Note))
			}
		})
	}
}

// Tokens that expire while a push is under way are refreshed: nothing pins
// the first Authorization header.
func TestPushTokenExpiresMidUpload(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t, registrytest.WithTokenAuth("u", "p", 300*time.Millisecond))
	a := newArtifact(t, 8*MiB)
	// Slow each PATCH's answer beyond the token's life, in 1 MiB chunks.
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.Delay(400 * time.Millisecond)})
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Skip: 2, Times: 1, Action: registrytest.ResetAfter(100 << 10)})
	dst := repo(t, reg, "push-token")
	opts := transfer.Options{Retry: fast(3), ChunkSize: 2 * MiB}
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if n := reg.Stats().Kinds[registrytest.Token].Requests; n < 2 {
		t.Fatalf("%d token requests: the token was never refreshed", n)
	}
}

// Registry to registry on the same host: the blob is mounted, not moved.
func TestCopyMountsAcrossRepositories(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	src := seed(t, reg, "mount-src", a)
	dst := repo(t, reg, "mount-dst")
	reg.ResetStats()
	ev := &events{}
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "v2", transfer.Options{Observer: ev}); err != nil {
		t.Fatal(err)
	}
	if len(ev.of(progress.Mounted)) != 2 || reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes > 0 {
		t.Fatalf("mounted %d, GET bytes %d", len(ev.of(progress.Mounted)), reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes)
	}
	verifyStore(t, dst, a)
}

// Registry to registry across registries, with resets on both sides.
func TestCopyRegistryToRegistryWithFaultsBothWays(t *testing.T) {
	regA, regB := registrytest.New(t), registrytest.New(t)
	a := newArtifact(t, 12*MiB)
	src := seed(t, regA, "r2r", a)
	regA.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(3 * MiB)})
	regB.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(5 * MiB)})
	dst := repo(t, regB, "r2r")
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3)}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if r := ratio(regB.Stats().Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)); r > 1.01 {
		t.Fatalf("upload bytes / payload %.3f", r)
	}
}

// Wrap on the destination of an existing oras.Copy push.
func TestWrapOrasCopyPushResumes(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 8*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(2 * MiB)})
	dst := repo(t, reg, "wrap-push")
	opts := transfer.Options{Retry: fast(3)}
	// Wrapping the source too lets the push re-read the content from the
	// registry's offset; a plain reader could only go forward.
	if _, err := oras.Copy(context.Background(), transfer.Wrap(a.store, opts), "v1", transfer.Wrap(dst, opts), "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
}

// oras-go drops the headers of a 429 on a manifest PUT; sturdy notes the
// Retry-After on the wire and honours it anyway.
func TestManifestRetryAfterHonoured(t *testing.T) {
	t.Parallel() // waits more than it computes: overlaps the other waiting tests
	reg := registrytest.New(t)
	a := newArtifact(t, 1000)
	reg.Inject(registrytest.Rule{Kind: registrytest.ManifestPut, Times: 1,
		Action: registrytest.Respond(http.StatusTooManyRequests).WithRetryAfter(3 * time.Second)})
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobHead, Times: 1,
		Action: registrytest.Respond(http.StatusServiceUnavailable).WithRetryAfter(2 * time.Second)})
	var mu sync.Mutex
	var waits []time.Duration
	opts := transfer.Options{Retry: fast(3)}
	opts.Retry.MaxRetryAfter = 10 * time.Millisecond // proves the header was read, without sleeping it
	opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) {
		mu.Lock()
		waits = append(waits, ri.Backoff)
		mu.Unlock()
	}
	dst := repo(t, reg, "manifest-429")
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if len(waits) != 2 || waits[0] != 10*time.Millisecond || waits[1] != 10*time.Millisecond {
		t.Fatalf("waits %v, want two Retry-After waits capped at 10ms", waits)
	}
}

// A 416 on a PATCH means the registry holds another offset than ours: the
// upload asks where it stands and goes on from there, within the attempt.
func TestPushPatch416Requeries(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 3*MiB)
	// The second chunk's PATCH is refused: the registry's offset differs
	// from ours, as far as the client can tell.
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Skip: 1, Times: 1, Action: registrytest.Respond(http.StatusRequestedRangeNotSatisfiable)})
	ev := &events{}
	dst := repo(t, reg, "push-416")
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(2), Observer: ev, ChunkSize: MiB}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	st := reg.Stats()
	if st.Kinds[registrytest.UploadStatus].Requests < 1 || st.Kinds[registrytest.UploadPatch].Statuses[http.StatusRequestedRangeNotSatisfiable] != 1 {
		t.Fatalf("stats %+v", st.Kinds)
	}
	if len(ev.of(progress.Retrying)) != 0 {
		t.Fatalf("a 416 should be settled within the attempt: %v", ev.reasons(progress.Retrying))
	}
}

// A 416 to the first PATCH of a session cannot be about the offset (both
// sides are at 0): the registry refuses the chunk itself, as GHCR does
// above 4 MiB. sturdy sends smaller chunks, and says so.
func TestPushRefusedChunkIsShrunk(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 3*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.Respond(http.StatusRequestedRangeNotSatisfiable)})
	ev := &events{}
	dst := repo(t, reg, "push-shrink")
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(2), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	st := reg.Stats()
	if got := st.Kinds[registrytest.UploadPatch].Statuses[http.StatusAccepted]; got != 2 {
		t.Fatalf("accepted PATCHes = %d, want 2 chunks of 1.5 MiB (%+v)", got, st.Kinds)
	}
	if !slices.ContainsFunc(ev.reasons(progress.Note), func(r string) bool { return strings.Contains(r, "refused a chunk") }) {
		t.Fatalf("notes: %v", ev.reasons(progress.Note))
	}
	if len(ev.of(progress.Retrying)) != 0 {
		t.Fatalf("a refused chunk is settled within the attempt: %v", ev.reasons(progress.Retrying))
	}
}

// Options.MountFrom names a repository on the destination registry to
// mount from before uploading.
func TestPushMountFrom(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	seed(t, reg, "library/base", a)
	dst := repo(t, reg, "team/model")
	reg.ResetStats()
	ev := &events{}
	opts := transfer.Options{MountFrom: []string{"does/not-exist", "library/base"}, Observer: ev}
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	if n := len(ev.of(progress.Mounted)); n != 2 {
		t.Fatalf("mounted %d blobs, want 2 (config and layer)", n)
	}
	if n := reg.Stats().Kinds[registrytest.UploadPatch].RequestBodyBytes + reg.Stats().Kinds[registrytest.UploadPut].RequestBodyBytes; n > 0 {
		t.Fatalf("%d blob bytes uploaded despite the mount", n)
	}
	verifyStore(t, dst, a)
}

// A registry that forgot the upload session (404 BLOB_UPLOAD_UNKNOWN: it
// expired, or was purged) gets a new session from byte 0.
func TestPushSessionLostStartsOver(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 3*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.Respond(http.StatusNotFound)})
	ev := &events{}
	dst := repo(t, reg, "push-lost")
	if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if !contains(ev.reasons(progress.Note), "registry lost the upload session; starting a new one from byte 0") {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
	if n := reg.Stats().Kinds[registrytest.UploadPost].Requests; n < 3 { // config, layer, layer again
		t.Fatalf("%d upload sessions started", n)
	}
}

package e2e

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// The fault matrix: each class of fault of the design's fault model, on a
// pull and on a push of a multi-MiB blob, against every registry
// implementation. Where a registry lacks what a path needs (ggcr has no
// upload status and serves only closed ranges) the matrix asserts the
// documented fallback -- a Note, then a slower path that still finishes --
// never a skip.

const (
	matrixPullSize = 8 * MiB
	matrixPushSize = 16 * MiB
	matrixPeriod   = 2 * MiB // reset period, both directions
)

type pullCase struct {
	name   string
	inject func(reg *registrytest.Registry, layer digest.Digest)
	check  func(t *testing.T, m *matrixRun, st registrytest.Stats)
}

var pullCases = []pullCase{
	{
		name: "clean",
		check: func(t *testing.T, m *matrixRun, st registrytest.Stats) {
			if r := m.ev.reasons(progress.Retrying); len(r) != 0 {
				t.Errorf("retries on a clean link: %v (%v)", r, m.ev.of(progress.Retrying))
			}
			if r := ratio(st.Kinds[registrytest.BlobGet].ResponseBodyBytes, matrixPullSize); r > 1.01 {
				t.Errorf("blob GET body bytes / payload = %.3f", r)
			}
		},
	},
	{
		// Each connection is reset at the next multiple of 2 MiB: only a
		// resuming client finishes, and it reads every byte once. ggcr
		// needs the closed range form to resume.
		name: "resets",
		inject: func(reg *registrytest.Registry, layer digest.Digest) {
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Action: registrytest.ResetEvery(matrixPeriod)})
		},
		check: func(t *testing.T, m *matrixRun, st registrytest.Stats) {
			var offsets []int64
			for _, e := range m.ev.of(progress.Resumed) {
				offsets = append(offsets, e.Offset)
			}
			if want := []int64{2 * MiB, 4 * MiB, 6 * MiB}; !slices.Equal(offsets, want) {
				t.Errorf("resumed at %v, want %v", offsets, want)
			}
			if r := ratio(st.Kinds[registrytest.BlobGet].ResponseBodyBytes, matrixPullSize); r > 1.01 {
				t.Errorf("blob GET body bytes / payload = %.3f, want ~1 (resume, not restart)", r)
			}
		},
	},
	{
		name: "stall",
		inject: func(reg *registrytest.Registry, layer digest.Digest) {
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Times: 1, Action: registrytest.Stall(3 * MiB)})
		},
		check: func(t *testing.T, m *matrixRun, st registrytest.Stats) {
			if !contains(m.ev.reasons(progress.Retrying), "stalled") {
				t.Errorf("retry reasons %v, want stalled", m.ev.reasons(progress.Retrying))
			}
			if r := m.ev.of(progress.Resumed); len(r) != 1 || r[0].Offset != 3*MiB {
				t.Errorf("resumed %v, want once at 3 MiB", r)
			}
		},
	},
	{
		name: "503+Retry-After",
		inject: func(reg *registrytest.Registry, layer digest.Digest) {
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Times: 2,
				Action: registrytest.Respond(http.StatusServiceUnavailable).WithRetryAfter(time.Second)})
		},
		check: func(t *testing.T, m *matrixRun, st registrytest.Stats) {
			// Two waits at the Retry-After cap: the header was read (the
			// computed backoff is at most 5 ms).
			if w := m.backoffs(); !slices.Equal(w, []time.Duration{matrixRetryAfter, matrixRetryAfter}) {
				t.Errorf("waits %v, want two of %v", w, matrixRetryAfter)
			}
		},
	},
	{
		// A flipped byte is caught by the digest, never committed, and
		// costs one read from byte 0.
		name: "corrupt",
		inject: func(reg *registrytest.Registry, layer digest.Digest) {
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Times: 1, Action: registrytest.Corrupt(5 * MiB)})
		},
		check: func(t *testing.T, m *matrixRun, st registrytest.Stats) {
			if !m.hasNote("digest mismatch") {
				t.Errorf("notes %v, want a digest mismatch", m.ev.reasons(progress.Note))
			}
		},
	},
	{
		// A registry (or proxy) that refuses the range of a resumed read
		// with 416: the read degrades to one from byte 0, with a Note.
		name: "range refused",
		inject: func(reg *registrytest.Registry, layer digest.Digest) {
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Times: 1, Action: registrytest.ResetAfter(3 * MiB)})
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Skip: 1, Times: 1,
				Action: registrytest.Respond(http.StatusRequestedRangeNotSatisfiable)})
		},
		check: func(t *testing.T, m *matrixRun, st registrytest.Stats) {
			if len(m.ev.of(progress.Note)) == 0 {
				t.Error("no Note about the refused range")
			}
			if n := st.Kinds[registrytest.BlobGet].Statuses[http.StatusRequestedRangeNotSatisfiable]; n != 1 {
				t.Errorf("%d answers 416, want 1", n)
			}
		},
	},
}

func TestMatrixPull(t *testing.T) {
	for _, impl := range registrytest.Implementations() {
		for _, tc := range pullCases {
			t.Run(impl.String()+"/"+tc.name, func(t *testing.T) {
				reg := registrytest.New(t, registrytest.WithImplementation(impl))
				a := newArtifact(t, matrixPullSize)
				src := seed(t, reg, "matrix-pull", a)
				reg.ResetStats()
				if tc.inject != nil {
					tc.inject(reg, a.layers[0].Digest)
				}
				m := newMatrixRun()
				dst := newLayout(t)
				root, err := transfer.Copy(context.Background(), src, "v1", dst, "", m.opts)
				if err != nil {
					t.Fatalf("pull failed: %v\nretries %v\nnotes %v", err, m.ev.reasons(progress.Retrying), m.ev.reasons(progress.Note))
				}
				if root.Digest != a.root.Digest {
					t.Fatalf("root %s, want %s", root.Digest, a.root.Digest)
				}
				// The layout verifies digests as it stores; verifyStore
				// reads every layer back through a verifying reader.
				verifyStore(t, dst, a)
				assertCompleted(t, m, a.layers[0].Digest)
				tc.check(t, m, reg.Stats())
			})
		}
	}
}

type pushCase struct {
	name   string
	inject func(reg *registrytest.Registry, m *matrixRun)
	check  func(t *testing.T, reg *registrytest.Registry, m *matrixRun, wrote int64)
}

var pushCases = []pushCase{
	{
		name: "clean",
		check: func(t *testing.T, reg *registrytest.Registry, m *matrixRun, wrote int64) {
			if r := m.ev.reasons(progress.Retrying); len(r) != 0 {
				t.Errorf("retries on a clean link: %v (%v)", r, m.ev.of(progress.Retrying))
			}
			if r := ratio(uploadBytes(reg.Stats()), matrixPushSize); r > 1.01 {
				t.Errorf("upload body bytes / payload = %.3f", r)
			}
		},
	},
	{
		// Every PATCH is reset at the next multiple of 2 MiB, as a real
		// network cuts: the registry keeps what was in flight, and a status
		// query right after the cut may report less. Distribution: resume
		// from what it reports. ggcr, which cannot be asked: a new session
		// from byte 0, so its link breaks once (a link that breaks every
		// 2 MiB cannot be crossed by restarting).
		name: "resets",
		inject: func(reg *registrytest.Registry, m *matrixRun) {
			reg.Inject(cutRule(reg))
		},
		check: func(t *testing.T, reg *registrytest.Registry, m *matrixRun, wrote int64) {
			st := reg.Stats()
			logCuts(t, st, wrote)
			if r := ratio(uploadBytes(st), matrixPushSize); r > 1.25 {
				t.Errorf("registry-side upload body bytes / payload = %.3f, want <= 1.25", r)
			}
			if reg.Capabilities().UploadStatus {
				if n := len(m.ev.of(progress.Resumed)); n == 0 {
					t.Error("no resume")
				}
				return
			}
			assertNoStatusFallback(t, reg, m)
		},
	},
	{
		name: "stall",
		inject: func(reg *registrytest.Registry, m *matrixRun) {
			m.removeOnStall(reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.Stall(3 * MiB)}))
		},
		check: func(t *testing.T, reg *registrytest.Registry, m *matrixRun, wrote int64) {
			if !contains(m.ev.reasons(progress.Retrying), "stalled") {
				t.Errorf("retry reasons %v, want stalled", m.ev.reasons(progress.Retrying))
			}
			if reg.Capabilities().UploadStatus {
				if r := m.ev.of(progress.Resumed); len(r) == 0 || r[0].Offset < 3*MiB {
					t.Errorf("resumed %v, want from 3 MiB on", r)
				}
				return
			}
			assertNoStatusFallback(t, reg, m)
		},
	},
	{
		// Session starts refused twice with 503 and Retry-After.
		name: "503+Retry-After",
		inject: func(reg *registrytest.Registry, m *matrixRun) {
			reg.Inject(registrytest.Rule{Kind: registrytest.UploadPost, Times: 2,
				Action: registrytest.Respond(http.StatusServiceUnavailable).WithRetryAfter(time.Second)})
		},
		check: func(t *testing.T, reg *registrytest.Registry, m *matrixRun, wrote int64) {
			if w := m.backoffs(); !slices.Equal(w, []time.Duration{matrixRetryAfter, matrixRetryAfter}) {
				t.Errorf("waits %v, want two of %v", w, matrixRetryAfter)
			}
		},
	},
	{
		// A byte flipped in a PATCH: the registry refuses the digest at
		// the PUT, nothing is committed, and the upload starts over once.
		name: "corrupt",
		inject: func(reg *registrytest.Registry, m *matrixRun) {
			reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Times: 1, Action: registrytest.Corrupt(5 * MiB)})
		},
		check: func(t *testing.T, reg *registrytest.Registry, m *matrixRun, wrote int64) {
			if !m.hasNote("registry rejected the digest; restarting the upload from byte 0") {
				t.Errorf("notes %v", m.ev.reasons(progress.Note))
			}
		},
	},
}

// cutRule cuts every PATCH at the next multiple of matrixPeriod on a
// registry that reports upload offsets, and the first PATCH once on one
// that cannot (it restarts from byte 0).
func cutRule(reg *registrytest.Registry) registrytest.Rule {
	rule := registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(matrixPeriod)}
	if !reg.Capabilities().UploadStatus {
		rule.Times = 1
	}
	return rule
}

// TestMatrixPush runs every push case against a registry that cuts like a
// real network (WithRealisticCuts).
func TestMatrixPush(t *testing.T) {
	for _, impl := range registrytest.Implementations() {
		for _, tc := range pushCases {
			t.Run(impl.String()+"/"+tc.name, func(t *testing.T) {
				reg := registrytest.New(t, registrytest.WithImplementation(impl), registrytest.WithRealisticCuts(0, 0))
				m := newMatrixRun()
				if tc.inject != nil {
					tc.inject(reg, m)
				}
				wrote := pushMatrix(t, reg, m)
				tc.check(t, reg, m, wrote)
			})
		}
	}
}

// The tight form of the realistic-cut push, for a client that settles on
// the registry's real offset after each cut: one PATCH per cut (plus the
// one that completes), and no byte the registry kept sent again. On a
// registry without upload status that means one cut PATCH, then the
// fallback carrying the blob once.
func TestMatrixPushRealisticCutsTight(t *testing.T) {
	for _, impl := range registrytest.Implementations() {
		t.Run(impl.String(), func(t *testing.T) {
			reg := registrytest.New(t, registrytest.WithImplementation(impl), registrytest.WithRealisticCuts(0, 0))
			reg.Inject(cutRule(reg))
			m := newMatrixRun()
			wrote := pushMatrix(t, reg, m)
			st := reg.Stats()
			logCuts(t, st, wrote)
			patches := st.Kinds[registrytest.UploadPatch]
			if patches.Requests > patches.Cuts+1 {
				t.Errorf("%d PATCH requests for %d cuts, want at most one per cut plus the last", patches.Requests, patches.Cuts)
			}
			if reg.Capabilities().UploadStatus {
				if r := ratio(uploadBytes(st), matrixPushSize); r > 1.01 {
					t.Errorf("registry-side upload body bytes / payload = %.3f, want <= 1.01: bytes the registry kept were sent again", r)
				}
				return
			}
			// The one cut PATCH, then a new session that carries the blob
			// once: nothing more than the cut chunk is sent twice.
			assertNoStatusFallback(t, reg, m)
			if patches.Requests != 2 || patches.Cuts != 1 {
				t.Errorf("%d PATCH requests for %d cuts, want the cut one and the new session's", patches.Requests, patches.Cuts)
			}
			if kept := uploadBytes(st); kept > matrixPushSize+matrixPeriod+registrytest.DefaultInFlight+configSize {
				t.Errorf("registry-side upload bytes %d, want the blob once plus the cut chunk", kept)
			}
		})
	}
}

// configSize is the size of the artifact's config blob ("{}"), which goes
// up in a monolithic PUT beside the layer.
const configSize = 2

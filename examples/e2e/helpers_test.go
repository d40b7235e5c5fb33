package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

func TestMain(m *testing.M) {
	// Every registry is closed (and its client's idle connections
	// dropped) by its test's cleanup: what is left after all tests is a
	// leak of sturdy's, but for distribution's own broadcaster and
	// toxiproxy's stuck pumps (see toxiproxyLeaks).
	goleak.VerifyTestMain(m, append(registrytest.IgnoreLeaks(), toxiproxyLeaks()...)...)
}

const MiB = 1 << 20

// fast is the retry policy of these tests: real faults, tiny waits.
func fast(attempts int) retrypolicy.Config {
	return retrypolicy.Config{MaxAttempts: attempts, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

type artifact struct {
	store  oras.Target
	root   ocispec.Descriptor
	layers []ocispec.Descriptor
	data   map[digest.Digest][]byte
}

func newArtifact(t testing.TB, sizes ...int) *artifact {
	t.Helper()
	ctx := context.Background()
	var store oras.Target = memory.New()
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total >= 32*MiB {
		// memory.Store takes about a minute to take 256 MiB under -race.
		store = newLayout(t)
	}
	a := &artifact{store: store, data: map[digest.Digest][]byte{}}
	for _, n := range sizes {
		b := randomBlob(t, n)
		d := content.NewDescriptorFromBytes("application/vnd.sturdy.test.layer", b)
		if err := a.store.Push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		a.layers = append(a.layers, d)
		a.data[d.Digest] = b
	}
	root, err := oras.PackManifest(ctx, a.store, oras.PackManifestVersion1_1, "application/vnd.sturdy.test",
		oras.PackManifestOptions{Layers: a.layers})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.Tag(ctx, root, "v1"); err != nil {
		t.Fatal(err)
	}
	a.root = root
	return a
}

// randomBlob returns n bytes that no two blobs share and in which no two
// 4 KiB blocks are equal (a range joined at the wrong place cannot pass
// the digest check), fast enough under -race for 256 MiB: one random MiB,
// repeated, each block stamped with its index and a random seed.
func randomBlob(t testing.TB, n int) []byte {
	t.Helper()
	seed := make([]byte, min(n, 1<<20))
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	for off := 0; off < n; off += len(seed) {
		copy(b[off:], seed)
	}
	salt := binary.LittleEndian.Uint64(append(seed[:min(len(seed), 8):min(len(seed), 8)], make([]byte, 8)...))
	for off := 0; off+16 <= n; off += 4 << 10 {
		binary.LittleEndian.PutUint64(b[off:], uint64(off))
		binary.LittleEndian.PutUint64(b[off+8:], salt)
	}
	return b
}

func repo(t testing.TB, reg *registrytest.Registry, name string) *remote.Repository {
	t.Helper()
	r, err := reg.Repository(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// seed pushes a into the registry with plain oras-go, no faults.
func seed(t testing.TB, reg *registrytest.Registry, name string, a *artifact) *remote.Repository {
	t.Helper()
	r := repo(t, reg, name)
	if _, err := oras.Copy(context.Background(), a.store, "v1", r, "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	return r
}

// verifyLayout checks that every layer of a is in the layout with the
// right bytes, and the tag points at the root.
func verifyStore(t testing.TB, s content.ReadOnlyStorage, a *artifact) {
	t.Helper()
	ctx := context.Background()
	for _, l := range a.layers {
		// Streamed and hashed: content.FetchAll takes most of a minute
		// for 256 MiB under -race.
		rc, err := s.Fetch(ctx, l)
		if err != nil {
			t.Fatalf("layer %s: %v", l.Digest, err)
		}
		h := digest.SHA256.Digester()
		n, err := io.Copy(h.Hash(), rc)
		rc.Close()
		if err != nil || n != l.Size || h.Digest() != digest.FromBytes(a.data[l.Digest]) {
			t.Fatalf("layer %s: %d bytes, %v, content differs", l.Digest, n, err)
		}
	}
	if ok, err := s.Exists(ctx, a.root); err != nil || !ok {
		t.Fatalf("root %s missing: %v", a.root.Digest, err)
	}
}

func newLayout(t testing.TB) *oci.Store {
	t.Helper()
	s, err := oci.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func payload(a *artifact) (n int64) {
	for _, l := range a.layers {
		n += l.Size
	}
	return n
}

// events records what an Observer saw, safe for concurrent use.
type events struct {
	mu  sync.Mutex
	all []progress.Event
}

func (e *events) OnEvent(ev progress.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) of(kind progress.Kind) []progress.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []progress.Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) reasons(kind progress.Kind) []string {
	var out []string
	for _, ev := range e.of(kind) {
		out = append(out, ev.Reason)
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func ratio(wire, payload int64) float64 { return float64(wire) / float64(payload) }

// assertIsolated checks what a failed blob must leave behind: its healthy
// sibling copied, and neither the manifest above it nor the tag.
func assertIsolated(t testing.TB, err error, dst content.ReadOnlyStorage, a *artifact, sibling ocispec.Descriptor) {
	t.Helper()
	if !errors.Is(err, transfer.ErrIncomplete) {
		t.Fatalf("err = %v, want ErrIncomplete", err)
	}
	ctx := context.Background()
	if ok, _ := dst.Exists(ctx, sibling); !ok {
		t.Fatal("the healthy sibling was not copied")
	}
	if ok, _ := dst.Exists(ctx, a.root); ok {
		t.Fatal("manifest pushed although a layer failed")
	}
	if r, ok := dst.(content.Resolver); ok {
		if _, err := r.Resolve(ctx, "v1"); err == nil {
			t.Fatal("tagged although a layer failed")
		}
	}
}

func mustFailOn(t testing.TB, err error, d digest.Digest) *transfer.BlobError {
	t.Helper()
	var be *transfer.BlobError
	if !errors.As(err, &be) {
		t.Fatalf("want a *transfer.BlobError, got %v", err)
	}
	if be.Desc.Digest != d {
		t.Fatalf("failed blob %s, want %s (err %v)", be.Desc.Digest, d, err)
	}
	return be
}

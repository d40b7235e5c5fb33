package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastRetry keeps tests from sleeping real backoffs.
var fastRetry = retrypolicy.Config{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

func randomBlob(t testing.TB, n int) ([]byte, ocispec.Descriptor) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, content.NewDescriptorFromBytes("application/vnd.test.layer", b)
}

// artifact pushes layers and a manifest tagged "v1" into a memory store.
func artifact(t testing.TB, sizes ...int) (*memory.Store, ocispec.Descriptor, []ocispec.Descriptor) {
	ctx := context.Background()
	s := memory.New()
	var layers []ocispec.Descriptor
	for _, n := range sizes {
		b, d := randomBlob(t, n)
		if err := s.Push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, d)
	}
	root, err := oras.PackManifest(ctx, s, oras.PackManifestVersion1_1, "application/vnd.test.artifact", oras.PackManifestOptions{Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(ctx, root, "v1"); err != nil {
		t.Fatal(err)
	}
	return s, root, layers
}

// faultySource is a local store whose blob reads break: reset after
// every `every` bytes of each open, or fail outright for one digest.
type faultySource struct {
	*memory.Store
	every   int64
	failFor digest.Digest
	failErr error
	opens   atomic.Int64
}

func (f *faultySource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.Digest == f.failFor {
		return nil, f.failErr
	}
	rc, err := f.Store.Fetch(ctx, d)
	if err != nil || d.MediaType == ocispec.MediaTypeImageManifest || f.every == 0 {
		return rc, err
	}
	f.opens.Add(1)
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	// Seekable like a file in oci.Store: the mover seeks on reopen.
	return &breakingReader{rc: io.NopCloser(nil), r: bytes.NewReader(b), left: f.every}, nil
}

// breakingReader fails with a connection reset after left bytes.
type breakingReader struct {
	rc   io.ReadCloser
	r    *bytes.Reader
	left int64
}

func (b *breakingReader) Seek(off int64, whence int) (int64, error) { return b.r.Seek(off, whence) }

func (b *breakingReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("read: %w", syscall.ECONNRESET)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *breakingReader) Close() error { return nil }

func TestCopyHealsBrokenReadsIntoOCILayout(t *testing.T) {
	src, root, layers := artifact(t, 5<<20, 100, 1<<20)
	fsrc := &faultySource{Store: src, every: 1200 << 10} // more than MinProgress per open
	dst, err := oci.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := progress.NewTracker()
	opts := Options{Retry: fastRetry, Observer: tr}
	opts.Retry.MaxAttempts = 2 // each reopen makes progress, so 2 suffices
	got, err := Copy(context.Background(), fsrc, "v1", dst, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != root.Digest {
		t.Fatalf("root %s, want %s", got.Digest, root.Digest)
	}
	for _, l := range layers {
		ok, err := dst.Exists(context.Background(), l)
		if err != nil || !ok {
			t.Fatalf("layer %s missing: %v", l.Digest, err)
		}
	}
	if d, err := dst.Resolve(context.Background(), "v1"); err != nil || d.Digest != root.Digest {
		t.Fatalf("tag: %v %v", d, err)
	}
	sum := tr.Summary()
	if sum.Resumes == 0 || sum.Retries == 0 {
		t.Fatalf("want resumes and retries in the summary:\n%s", sum)
	}
	// The source was read across reopens without restarting from 0: no byte
	// moved twice (the memory store's reader seeks).
	if sum.Wire != sum.Payload {
		t.Fatalf("wire %d, payload %d: bytes were re-read", sum.Wire, sum.Payload)
	}
}

func TestCopyFailingBlobDoesNotCancelSiblingsAndHoldsManifest(t *testing.T) {
	src, root, layers := artifact(t, 1<<20, 2<<20, 3<<20)
	fsrc := &faultySource{Store: src, failFor: layers[1].Digest, failErr: fmt.Errorf("open: %w", syscall.EACCES)}
	dst := memory.New()
	_, err := Copy(context.Background(), fsrc, "v1", dst, "", Options{Retry: fastRetry})
	if err == nil {
		t.Fatal("want an error")
	}
	var be *BlobError
	if !errors.As(err, &be) || be.Desc.Digest != layers[1].Digest || be.Attempts != 1 {
		t.Fatalf("err = %v", err)
	}
	if !errors.Is(err, syscall.EACCES) || !errors.Is(err, ErrIncomplete) {
		t.Fatalf("causes not reachable: %v", err)
	}
	for i, l := range layers {
		ok, _ := dst.Exists(context.Background(), l)
		if ok != (i != 1) {
			t.Errorf("layer %d exists=%v", i, ok)
		}
	}
	if ok, _ := dst.Exists(context.Background(), root); ok {
		t.Fatal("manifest pushed with a layer missing")
	}
	if _, err := dst.Resolve(context.Background(), "v1"); err == nil {
		t.Fatal("tagged with a layer missing")
	}
}

func TestCopyCancelled(t *testing.T) {
	src, _, _ := artifact(t, 4<<20, 4<<20)
	fsrc := &faultySource{Store: src, every: 64 << 10}
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	opts := Options{Retry: retrypolicy.Config{InitialBackoff: time.Hour, MaxBackoff: time.Hour}}
	opts.Observer = progress.Func(func(e progress.Event) {
		if e.Kind == progress.Retrying {
			once.Do(cancel) // cancel during the hour-long backoff
		}
	})
	dst := memory.New()
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, fsrc, "v1", dst, "", opts)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Copy did not return after cancel")
	}
	if _, err := dst.Resolve(context.Background(), "v1"); err == nil {
		t.Fatal("tagged after cancel")
	}
}

func TestCopyGraphSkipsExistingAndDedupes(t *testing.T) {
	src, root, layers := artifact(t, 1000, 2000)
	dst := memory.New()
	ctx := context.Background()
	b, _ := content.FetchAll(ctx, src, layers[0])
	if err := dst.Push(ctx, layers[0], bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	kinds := map[progress.Kind]int{}
	opts := Options{Observer: progress.Func(func(e progress.Event) {
		mu.Lock()
		kinds[e.Kind]++
		mu.Unlock()
	})}
	if err := CopyGraph(ctx, src, dst, root, opts); err != nil {
		t.Fatal(err)
	}
	// config + second layer + manifest completed, the first layer skipped.
	if kinds[progress.Skipped] != 1 || kinds[progress.Completed] != 3 {
		t.Fatalf("events: %v", kinds)
	}
}

func TestCopyGraphSameDigestOnce(t *testing.T) {
	ctx := context.Background()
	src := memory.New()
	b, d := randomBlob(t, 5000)
	if err := src.Push(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	root, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, "application/vnd.test.artifact",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{d, d, d}})
	if err != nil {
		t.Fatal(err)
	}
	var started atomic.Int64
	opts := Options{Observer: progress.Func(func(e progress.Event) {
		if e.Kind == progress.Started && e.Desc.Digest == d.Digest {
			started.Add(1)
		}
	})}
	if err := CopyGraph(ctx, src, memory.New(), root, opts); err != nil {
		t.Fatal(err)
	}
	if started.Load() != 1 {
		t.Fatalf("layer started %d times", started.Load())
	}
}

// countingSource records how many blob fetches run at once, and how many
// goroutines exist while they do.
type countingSource struct {
	*memory.Store
	inFlight, maxInFlight atomic.Int64
	maxGoroutines         atomic.Int64
}

func (c *countingSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.MediaType == ocispec.MediaTypeImageManifest {
		return c.Store.Fetch(ctx, d)
	}
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for m := c.maxInFlight.Load(); n > m && !c.maxInFlight.CompareAndSwap(m, n); m = c.maxInFlight.Load() {
	}
	if g := int64(runtime.NumGoroutine()); g > c.maxGoroutines.Load() {
		c.maxGoroutines.Store(g)
	}
	time.Sleep(time.Millisecond) // let the others pile up if they can
	return c.Store.Fetch(ctx, d)
}

func TestCopyBoundsConcurrencyAndGoroutines(t *testing.T) {
	sizes := make([]int, 200)
	for i := range sizes {
		sizes[i] = 100 + i
	}
	src, _, _ := artifact(t, sizes...)
	cs := &countingSource{Store: src}
	before := int64(runtime.NumGoroutine())
	if _, err := Copy(context.Background(), cs, "v1", memory.New(), "", Options{Concurrency: 3}); err != nil {
		t.Fatal(err)
	}
	if m := cs.maxInFlight.Load(); m > 3 || m < 1 {
		t.Fatalf("max blobs in flight %d, want <= 3", m)
	}
	// 200 layers must not mean 200 goroutines.
	if g := cs.maxGoroutines.Load() - before; g > 20 {
		t.Fatalf("%d goroutines above the baseline during the copy", g)
	}
}

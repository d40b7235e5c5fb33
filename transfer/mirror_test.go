package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// breakingStore serves its blobs until, after n bytes of one read, the
// connection "resets"; it counts the reads of blobs it has.
type breakingStore struct {
	*memory.Store
	after int64
	reads atomic.Int64
}

func (s *breakingStore) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := s.Store.Fetch(ctx, d)
	if err != nil {
		return nil, err // the config: not here, the origin has it
	}
	s.reads.Add(1)
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, s.after), errReader{fmt.Errorf("read: %w", syscall.ECONNRESET)}), rc}, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A mirror that breaks half-way: the blob goes on from that byte on the
// origin, without a retry; the mirror that failed is not asked again for
// the next blob once set aside; the summary counts what each served.
func TestMirrorContinuesOnOriginFromTheByteReached(t *testing.T) {
	origin, root, layers := artifact(t, 1<<20, 1<<20)
	mirror := &breakingStore{Store: memory.New(), after: 300 << 10}
	ctx := context.Background()
	for _, l := range layers {
		rc, _ := origin.Fetch(ctx, l)
		b, _ := io.ReadAll(rc)
		rc.Close()
		if err := mirror.Push(ctx, l, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	tr := progress.NewTracker()
	var retries atomic.Int64
	opts := Options{Retry: fastRetry, Observer: tr, Concurrency: 1, Mirrors: []Mirror{{Name: "m", Target: mirror}}}
	opts.Retry.OnRetry = func(retrypolicy.RetryInfo) { retries.Add(1) }
	dst := memory.New()
	if err := CopyGraph(ctx, origin, dst, root, opts); err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if ok, _ := dst.Exists(ctx, l); !ok {
			t.Fatalf("layer %s missing", l.Digest)
		}
	}
	if retries.Load() != 0 {
		t.Fatalf("%d retries: a mirror's failure should pass the blob on, not retry it", retries.Load())
	}
	s := tr.Summary()
	// The first layer: 300 KiB from the mirror, the rest from the origin;
	// the mirror failed after progress once, so it is asked again for the
	// second layer, fails again and is set aside.
	if s.Sources["m"] != 2*(300<<10) || s.Sources[OriginName] < 2*(1<<20)-2*(300<<10) {
		t.Fatalf("sources %v", s.Sources)
	}
	if mirror.reads.Load() != 2 {
		t.Fatalf("the mirror was read %d times", mirror.reads.Load())
	}
	if len(s.Notes) == 0 {
		t.Fatal("no note")
	}
}

func TestOptionsValidateMirrors(t *testing.T) {
	err := Options{Mirrors: []Mirror{{Name: "x"}}}.Validate()
	if !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("a mirror without a target: %v", err)
	}
}

func TestMediaTypeAgrees(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	for _, c := range []struct {
		mt   string
		raw  []byte
		want bool
	}{
		{ocispec.MediaTypeImageManifest, manifest, true},
		{ocispec.MediaTypeImageIndex, manifest, false}, // a mirror relabelling a manifest
		{ocispec.MediaTypeImageIndex, []byte(`{"schemaVersion":2}`), true},
		{ocispec.MediaTypeImageManifest, []byte(`not json`), false},
	} {
		if got := mediaTypeAgrees(ocispec.Descriptor{MediaType: c.mt}, c.raw); got != c.want {
			t.Errorf("%s over %s: %v, want %v", c.mt, c.raw, got, c.want)
		}
	}
}

// A chain reads over a network when any member does: bytes it reads again
// to drop count as wire bytes only then.
func TestChainNetwork(t *testing.T) {
	local := Options{Mirrors: []Mirror{{Name: "layout", Target: memory.New()}}}
	if newSource(memory.New(), local).network() {
		t.Error("a chain of local stores reads over a network")
	}
	if !newSource(&URLSource{}, local).network() {
		t.Error("a chain whose origin is a URL reads over no network")
	}
}

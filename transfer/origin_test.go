package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"

	"github.com/sturdyoci/sturdy/progress"
)

// A copy whose source lacks two layers: BlobErrors returns both, each
// from the source; errors.As alone would find only the first.
func TestBlobErrorsReturnsEveryFailedBlob(t *testing.T) {
	ctx := context.Background()
	src, root, layers := artifact(t, 100, 200, 300)
	holey := &faultySource{Store: src}
	missing := []ocispec.Descriptor{layers[0], layers[2]}
	s := &missingSource{faultySource: holey, missing: missing}
	_, err := Copy(ctx, s, "v1", memory.New(), "", Options{Retry: fastRetry})
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v", err)
	}
	bes := BlobErrors(err)
	if len(bes) != 2 {
		t.Fatalf("BlobErrors = %v, want 2", bes)
	}
	for _, be := range bes {
		if !slices.ContainsFunc(missing, func(d ocispec.Descriptor) bool { return d.Digest == be.Desc.Digest }) {
			t.Fatalf("unexpected failed blob %s", be.Desc.Digest)
		}
		if be.Origin != OriginSource || !errors.Is(be, errdef.ErrNotFound) {
			t.Fatalf("%s: origin %s, err %v", be.Desc.Digest, be.Origin, be.Err)
		}
	}
	if BlobErrors(nil) != nil || BlobErrors(errors.New("x")) != nil {
		t.Fatal("BlobErrors of an error without one should be nil")
	}
	_ = root
}

// missingSource answers not found for some blobs.
type missingSource struct {
	*faultySource
	missing []ocispec.Descriptor
}

func (s *missingSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	for _, m := range s.missing {
		if m.Digest == d.Digest {
			return nil, errdef.ErrNotFound
		}
	}
	return s.faultySource.Fetch(ctx, d)
}

// refusingStore is a destination whose Push fails with a permanent error.
type refusingStore struct{ *memory.Store }

func (s refusingStore) Push(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	if d.MediaType == ocispec.MediaTypeImageManifest {
		return s.Store.Push(ctx, d, r)
	}
	return &fs.PathError{Op: "write", Path: "/layers", Err: fs.ErrPermission}
}

func TestBlobErrorOriginDestination(t *testing.T) {
	src, root, _ := artifact(t, 100)
	err := CopyGraph(context.Background(), src, refusingStore{memory.New()}, root, Options{Retry: fastRetry})
	bes := BlobErrors(err)
	if len(bes) == 0 {
		t.Fatalf("err = %v", err)
	}
	for _, be := range bes {
		if be.Origin != OriginDestination || !errors.Is(be, fs.ErrPermission) {
			t.Fatalf("origin %s, err %v", be.Origin, be.Err)
		}
	}
}

// oras.Copy skips non-distributable (foreign) layers, which live at their
// URLs and are not in the source; so do Copy and CopyGraph, with a
// Skipped event.
func TestForeignLayersAreSkippedAsOrasDoes(t *testing.T) {
	ctx := context.Background()
	for _, mt := range []string{
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	} {
		src := memory.New()
		b, layer := randomBlob(t, 100)
		if err := src.Push(ctx, layer, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		foreign := ocispec.Descriptor{MediaType: mt, Digest: digest.Digest("sha256:" + string(bytes.Repeat([]byte("a"), 64))), Size: 1 << 20,
			URLs: []string{"https://example.com/layer.tar.gz"}}
		root, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, "application/vnd.test.artifact",
			oras.PackManifestOptions{Layers: []ocispec.Descriptor{foreign, layer}})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Tag(ctx, root, "v1"); err != nil {
			t.Fatal(err)
		}
		plain := memory.New()
		if _, err := oras.Copy(ctx, src, "v1", plain, "v1", oras.DefaultCopyOptions); err != nil {
			t.Fatalf("oras.Copy: %v", err)
		}
		var skipped []progress.Event
		dst := memory.New()
		obs := progress.Func(func(e progress.Event) {
			if e.Kind == progress.Skipped {
				skipped = append(skipped, e)
			}
		})
		if _, err := Copy(ctx, src, "v1", dst, "v1", Options{Retry: fastRetry, Observer: obs}); err != nil {
			t.Fatalf("%s: Copy: %v", mt, err)
		}
		for _, s := range []content.ReadOnlyStorage{plain, dst} {
			if ok, _ := s.Exists(ctx, foreign); ok {
				t.Fatal("a foreign layer was copied")
			}
			if ok, _ := s.Exists(ctx, layer); !ok {
				t.Fatal("the distributable layer is missing")
			}
		}
		if len(skipped) != 1 || skipped[0].Desc.Digest != foreign.Digest || skipped[0].Reason != "foreign layer" {
			t.Fatalf("skipped events %+v", skipped)
		}
	}
}

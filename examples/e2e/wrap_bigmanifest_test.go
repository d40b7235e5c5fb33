package e2e

import (
	"bytes"
	"context"
	"errors"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// Wrap(repo).Push of a manifest larger than Options.MaxMetadataBytes is
// refused with errdef.ErrSizeExceedsLimit, as oras-go's repository refuses
// it, and nothing lands anywhere: it never takes the blob path.
func TestWrapPushLargeManifestIsRefused(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 1000)
	raw, err := content.FetchAll(context.Background(), a.store, a.root)
	if err != nil {
		t.Fatal(err)
	}
	dst := repo(t, reg, "bigmanifest")
	for _, l := range a.layers {
		if err := dst.Push(context.Background(), l, bytes.NewReader(a.data[l.Digest])); err != nil {
			t.Fatal(err)
		}
	}
	w := transfer.Wrap(dst, transfer.Options{Retry: fast(2), MaxMetadataBytes: 64})
	if err := w.Push(context.Background(), a.root, bytes.NewReader(raw)); !errors.Is(err, errdef.ErrSizeExceedsLimit) {
		t.Fatalf("Push = %v, want ErrSizeExceedsLimit", err)
	}
	if _, err := w.Fetch(context.Background(), a.root); !errors.Is(err, errdef.ErrSizeExceedsLimit) {
		t.Fatalf("Fetch = %v, want ErrSizeExceedsLimit", err)
	}
	for name, exists := range map[string]func(context.Context, ocispec.Descriptor) (bool, error){
		"manifest": dst.Manifests().Exists, "blob": dst.Blobs().Exists,
	} {
		if ok, _ := exists(context.Background(), a.root); ok {
			t.Fatalf("the refused manifest is in the %s store", name)
		}
	}
}

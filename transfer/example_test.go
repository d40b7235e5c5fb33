package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// model builds a small artifact in memory: in real use the source is a
// *remote.Repository or an OCI layout on disk.
func model() (*memory.Store, ocispec.Descriptor) {
	ctx := context.Background()
	store := memory.New()
	weights := []byte(strings.Repeat("weights", 1000))
	layer := content.NewDescriptorFromBytes("application/vnd.example.weights", weights)
	_ = store.Push(ctx, layer, strings.NewReader(string(weights)))
	root, _ := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.example.model",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	_ = store.Tag(ctx, root, "v1")
	return store, root
}

func ExampleCopy() {
	src, _ := model()
	dir, _ := os.MkdirTemp("", "sturdy-example")
	defer os.RemoveAll(dir)
	dst, _ := oci.New(dir) // an OCI layout on disk

	tracker := progress.NewTracker()
	opts := transfer.Options{
		Concurrency: 4,
		Observer:    tracker,
		Retry:       retrypolicy.Config{MaxAttempts: 6},
	}
	root, err := transfer.Copy(context.Background(), src, "v1", dst, "v1", opts)
	if err != nil {
		// One *transfer.BlobError per failed blob, joined; nothing tagged.
		fmt.Println(err)
		return
	}
	s := tracker.Summary()
	fmt.Println(root.MediaType)
	fmt.Println("blobs:", s.Blobs, "completed:", s.Completed, "failed:", s.Failed)
	// Output:
	// application/vnd.oci.image.manifest.v1+json
	// blobs: 3 completed: 3 failed: 0
}

func ExampleCopyGraph() {
	src, root := model()
	dst := memory.New()
	err := transfer.CopyGraph(context.Background(), src, dst, root, transfer.Options{})
	ok, _ := dst.Exists(context.Background(), root)
	fmt.Println(err, ok)
	// Output:
	// <nil> true
}

// An existing oras.Copy pipeline keeps its call; only the targets change.
func ExampleWrap() {
	src, _ := model()
	dst := memory.New()
	opts := transfer.Options{} // production defaults
	desc, err := oras.Copy(context.Background(),
		transfer.Wrap(src, opts), "v1",
		transfer.Wrap(dst, opts), "v1",
		oras.DefaultCopyOptions)
	fmt.Println(err, desc.MediaType)
	// Output:
	// <nil> application/vnd.oci.image.manifest.v1+json
}

// Give repositories a client without oras-go's retrying transport, so
// that sturdy's loop is the only retry layer.
func ExampleNewClient() {
	client := transfer.NewClient(nil, nil) // anonymous; pass a credential func for auth
	fmt.Println(client.Client != nil, client.Cache != nil)
	// Output:
	// true true
}

// A failed copy joins one *BlobError per failed blob or manifest:
// BlobErrors lists them, each with its digest, attempts and the side that
// failed.
func ExampleBlobErrors() {
	src, root := model()
	// A source that lost its one layer.
	broken := memory.New()
	manifest, _ := content.FetchAll(context.Background(), src, root)
	_ = broken.Push(context.Background(), root, strings.NewReader(string(manifest)))
	_ = broken.Push(context.Background(), ocispec.DescriptorEmptyJSON, strings.NewReader("{}"))
	_ = broken.Tag(context.Background(), root, "v1")

	_, err := transfer.Copy(context.Background(), broken, "v1", memory.New(), "v1", transfer.Options{})
	for _, be := range transfer.BlobErrors(err) {
		fmt.Println(be.Desc.MediaType, be.Origin, be.Attempts, errors.Is(be, errdef.ErrNotFound))
	}
	fmt.Println(errors.Is(err, transfer.ErrIncomplete))
	// Output:
	// application/vnd.example.weights source 1 true
	// true
}

// A model registry's SDK hands out plain URLs (pre-signed object-store
// links): OpenURL reads one as a reader that resumes with ranged GETs and
// checks the digest; CopyGraph takes a URLSource as its source.
func ExampleOpenURL() {
	weights := []byte(strings.Repeat("weights", 1000))
	desc := content.NewDescriptorFromBytes("application/vnd.example.weights", weights)
	// Any server that honours Range; here a local one.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(weights))
	}))
	defer srv.Close()

	src := &transfer.URLSource{
		URL: func(ctx context.Context, d ocispec.Descriptor) (string, error) {
			// Ask the registry's API for a fresh link here.
			return srv.URL + "/" + d.Digest.Encoded(), nil
		},
	}
	rc, err := transfer.OpenURL(context.Background(), src, desc, transfer.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	fmt.Println(len(b), err)
	// Output:
	// 7000 <nil>
}

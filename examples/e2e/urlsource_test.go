package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// A model registry's SDK that hands out plain URLs: the registry's own
// blob and manifest URLs stand in for pre-signed links here (a real server
// that honours Range, with the faults on its wire). CopyGraph from a
// URLSource resumes each blob with ranged GETs to a URL asked afresh.
func TestURLSourceCopyGraphResumes(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 8*MiB, 3*MiB)
	seed(t, reg, "plain", a)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(2 * MiB)})
	var asked atomic.Int64
	src := &transfer.URLSource{
		URL: func(_ context.Context, d ocispec.Descriptor) (string, error) {
			asked.Add(1)
			kind := "blobs"
			if d.MediaType == ocispec.MediaTypeImageManifest {
				kind = "manifests"
			}
			return reg.URL() + "/v2/plain/" + kind + "/" + d.Digest.String(), nil
		},
		Client: &http.Client{Transport: reg.Client().Transport},
		Header: http.Header{"Accept": {ocispec.MediaTypeImageManifest, "*/*"}},
	}
	ev := &events{}
	dst := newLayout(t)
	if err := transfer.CopyGraph(context.Background(), src, dst, a.root, transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	if n := len(ev.of(progress.Resumed)); n < 4 {
		t.Fatalf("%d resumes, want one per cut", n)
	}
	if asked.Load() < 4 {
		t.Fatalf("URL asked %d times: every reopen must ask again", asked.Load())
	}
	if r := ratio(reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes, payload(a)); r > 1.01 {
		t.Fatalf("blob body bytes / payload = %.3f", r)
	}
}

// OpenURL is one blob as a healing, verifying reader; a flipped byte is a
// digest mismatch, never silently accepted.
func TestOpenURLVerifies(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	seed(t, reg, "plain", a)
	layer := a.layers[0]
	src := &transfer.URLSource{
		URL: func(_ context.Context, d ocispec.Descriptor) (string, error) {
			return reg.URL() + "/v2/plain/blobs/" + d.Digest.String(), nil
		},
		Client: &http.Client{Transport: reg.Client().Transport},
	}
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Times: 1, Action: registrytest.ResetAfter(MiB)})
	rc, err := transfer.OpenURL(context.Background(), src, layer, transfer.Options{Retry: fast(3)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != string(a.data[layer.Digest]) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}

	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Times: 1, Action: registrytest.Corrupt(100)})
	rc, err = transfer.OpenURL(context.Background(), src, layer, transfer.Options{Retry: fast(3)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	var be *transfer.BlobError
	if !errors.Is(err, content.ErrMismatchedDigest) || !errors.As(err, &be) || be.Desc.Digest != layer.Digest {
		t.Fatalf("err = %v, want a digest mismatch naming the blob", err)
	}
}

package e2e

import (
	"context"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// oras.Copy with MountFrom calls Mount on the wrapped destination; when
// the registry declines (the blob is not in the repository named), oras-go
// would push the blob itself in one monolithic PUT, without resume. Behind
// Wrap it goes through the resumable upload: its PATCHes survive resets.
func TestWrapMountDeclinedPushesResumably(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 8*MiB)
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(2 * MiB)})
	dst := repo(t, reg, "wrap-mount")
	ev := &events{}
	opts := transfer.Options{Retry: fast(3), Observer: ev}
	copts := oras.DefaultCopyOptions
	copts.MountFrom = func(context.Context, ocispec.Descriptor) ([]string, error) { return []string{"elsewhere"}, nil }
	if _, err := oras.Copy(context.Background(), transfer.Wrap(a.store, opts), "v1", transfer.Wrap(dst, opts), "v1", copts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	st := reg.Stats()
	if st.Kinds[registrytest.UploadPatch].Requests < 4 {
		t.Fatalf("the declined mount's blob did not go through the resumable upload: %+v", st.Kinds)
	}
	if len(ev.of(progress.Resumed)) == 0 {
		t.Fatal("no resume")
	}
}

package e2e

import (
	"context"
	"testing"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// One byte flipped on the source side of a registry-to-registry copy (the
// chunked-upload path): as the package doc says, a mismatch restarts the
// blob once from byte 0, here as on a pull into a layout
// (TestPullCorruptByte).
func TestCopyR2RCorruptSourceByteRestarts(t *testing.T) {
	regA, regB := registrytest.New(t), registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	src := seed(t, regA, "r2r-corrupt", a)
	regA.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.Corrupt(MiB)})
	ev := &events{}
	dst := repo(t, regB, "r2r-corrupt")
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3), Observer: ev}); err != nil {
		t.Fatalf("notes %v; err = %v", ev.reasons(progress.Note), err)
	}
	verifyStore(t, dst, a)
}

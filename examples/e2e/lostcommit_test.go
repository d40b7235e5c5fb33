package e2e

import (
	"context"
	"testing"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// The registry commits the blob but the PUT's response is lost (a reset
// after the work is done). sturdy looks before it sends again: the blob is
// there, so it is done, rather than re-uploading it from byte 0 in a new
// session (a lost 201 on a 100 GB blob would cost 100 GB) or failing on the
// old session's 404 BLOB_UPLOAD_UNKNOWN.
func TestLostCommitResponseDoesNotReupload(t *testing.T) {
	for _, attempts := range []int{3, 2} {
		reg := registrytest.New(t)
		a := newArtifact(t, 8*MiB)
		reg.Inject(registrytest.Rule{Kind: registrytest.UploadPut, Digest: a.layers[0].Digest, Times: 1, Action: registrytest.DropResponse()})
		ev := &events{}
		dst := repo(t, reg, "put-lost")
		if _, err := transfer.Copy(context.Background(), a.store, "v1", dst, "", transfer.Options{Retry: fast(attempts), Observer: ev}); err != nil {
			ok, _ := dst.Exists(context.Background(), a.layers[0])
			t.Errorf("MaxAttempts %d: blob in registry: %v; err = %v", attempts, ok, err)
			continue
		}
		verifyStore(t, dst, a)
		st := reg.Stats()
		if r := ratio(st.Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)); r > 1.01 {
			t.Errorf("MaxAttempts %d: PATCH body bytes / payload = %.2f (notes %v, retries %v)", attempts, r, ev.reasons(progress.Note), ev.reasons(progress.Retrying))
		}
	}
}

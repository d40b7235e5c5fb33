package e2e

import (
	"context"
	"errors"
	"testing"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// Wrap is documented as a drop-in whose ErrNotFound passes through
// unchanged: a missing blob fetched through sturdy's own ranged GET matches
// errdef.ErrNotFound, as oras-go's Fetch does.
func TestWrapFetchMissingBlobIsErrNotFound(t *testing.T) {
	reg := registrytest.New(t)
	r := repo(t, reg, "missing")
	desc := content.NewDescriptorFromBytes("application/octet-stream", []byte("not pushed"))
	ctx := context.Background()
	if _, err := r.Fetch(ctx, desc); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("oras-go itself: %v", err)
	}
	_, err := transfer.Wrap(r, transfer.Options{Retry: fast(2)}).Fetch(ctx, desc)
	if !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("Wrap(repo).Fetch of a missing blob: errors.Is(err, errdef.ErrNotFound) = false; err = %v", err)
	}
}

package e2e

import (
	"context"
	"testing"
	"time"

	"oras.land/oras-go/v2"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// An existing oras.Copy pipeline made resilient with Wrap on both sides
// (examples/wraporas), registry to registry, the destination sending
// chunks (Options.ChunkSize, for a proxy that limits request bodies).
// The first chunk reads the caller's reader, the Wrap'd source's
// fetchedBlob, whose parallel body prefetches a window of ranges and
// keeps them: nobody reads that reader again. Every later chunk reopens
// the source through streamSource.open -> fb.hr.src.open, a new parallel
// body drawing on the same Wrap's copy-wide buffer semaphore, which the
// abandoned window holds entirely when PullConnections ==
// MaxPullConnections (window 2 x conns = buffers 2 x max). take() waits
// on buffers.Acquire with no watchdog (the wait is "not the server's")
// until the attempt's size-derived deadline (>= 5 min): the copy hangs.
// (Fixed: the stream goes on when nothing was lost, and a reopen closes
// the reader's own connections first. 30 s tells a hang from -race.)
// With the defaults (8 per blob, 16 per copy) two such blobs in flight
// fill the 32 buffers the same way.
func TestReview3WrapChunkedPushFromWrappedFetchDeadlocks(t *testing.T) {
	review3WrapChunked(t, []int{16 * MiB},
		transfer.Options{Retry: fast(3), PullConnections: 4, MaxPullConnections: 4, PullRangeSize: MiB})
}

// The same with the default connection caps (8 per blob, 16 per copy) and
// two blobs in flight (oras.Copy runs 3 at once): their abandoned windows
// hold all 32 copy-wide buffers. With MaxPullConnections 16 and one blob
// (window 8 of 32 buffers) the same copy takes about 1.5 s.
func TestReview3WrapChunkedPushDeadlocksWithDefaultCaps(t *testing.T) {
	review3WrapChunked(t, []int{16 * MiB, 16 * MiB}, transfer.Options{Retry: fast(3), PullRangeSize: 512 << 10})
}

func review3WrapChunked(t *testing.T, sizes []int, srcOpts transfer.Options) {
	reg := registrytest.New(t)
	a := newArtifact(t, sizes...)
	src := seed(t, reg, "wrapsrc", a)
	dst := repo(t, reg, "wrapdst")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := oras.Copy(ctx, transfer.Wrap(src, srcOpts), "v1",
		transfer.Wrap(dst, transfer.Options{Retry: fast(3), ChunkSize: 4 * MiB}), "v1", oras.DefaultCopyOptions)
	if err != nil {
		t.Fatalf("registry-to-registry oras.Copy through Wrap with ChunkSize: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	verifyStore(t, dst, a)
}

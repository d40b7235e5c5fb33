package e2e

import (
	"context"
	"net/http"
	"testing"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// net/http may still read a request body after RoundTrip returned (its
// doc: "RoundTrip must always close the body ... may do so in a separate
// goroutine even after RoundTrip returns"): a server that answers a PUT
// before it has read the body. pushWhole (every blob under 1 MiB to a
// registry, Monolithic, the no-chunked fallback, Wrap's Push) closes its
// healingReader as soon as Push returns, while the transport's writeLoop
// may be inside that reader's Read -- a data race on r.body/r.err, and a
// nil dereference in fail() when Close sets r.body = nil under the Read.
// patch() waits for the transport to release its bodies (bodyTracker);
// pushWhole does not. Run with -race; without it the same test
// crashes the process now and then: "panic: close of closed channel"
// from the watchdog's stop, called by Close and by fail() in net/http's
// writeLoop goroutine.
func TestReview2MonolithicEarlyAnswerRacesTheBodyReader(t *testing.T) {
	regA, regB := registrytest.New(t), registrytest.New(t)
	a := newArtifact(t, 512<<10, 512<<10, 512<<10, 512<<10)
	src := seed(t, regA, "early", a)
	for _, l := range a.layers {
		// The source trickles, so the transport's writer waits inside
		// the healing reader's Read when the destination answers.
		regA.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: l.Digest, Times: 1, Action: registrytest.Trickle(64<<10, 200<<10)})
		regB.Inject(registrytest.Rule{Kind: registrytest.UploadPut, Digest: l.Digest, Times: 1, Action: registrytest.Respond(http.StatusServiceUnavailable)})
	}
	dst := repo(t, regB, "early")
	if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", transfer.Options{Retry: fast(3)}); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
}

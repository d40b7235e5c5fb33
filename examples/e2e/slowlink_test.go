package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// A pull over a link slower than MinThroughput/SafetyFactor: the attempt
// deadline (derived from size) fires under a live caller context, which is
// retryable, and the next attempt resumes with a deadline on what is left.
// (Found in review: the outer attempt's deadline used to end the source's
// own loop for good.)
func slowLinkPolicy() retrypolicy.Config {
	return retrypolicy.Config{
		MaxAttempts: 6, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		// 4 MiB at 1 MiB/s x1 = a 4 s deadline for the first attempt.
		MinThroughput: 1 << 20, SafetyFactor: 1, MinAttemptTimeout: time.Second,
		MinProgress: 256 << 10,
	}
}

func TestPullAttemptDeadlineIsRetried(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	src := seed(t, reg, "slow-pull", a)
	reg.SetBandwidth(600<<10, 0) // ~0.6 MiB/s: the whole blob needs ~7 s
	ev := &events{}
	opts := transfer.Options{Retry: slowLinkPolicy(), Observer: ev, StallTimeout: -1, LowSpeedLimit: -1}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dst := newLayout(t)
	if _, err := transfer.Copy(ctx, src, "v1", dst, "", opts); err != nil {
		t.Fatalf("retries %v; err = %v", ev.reasons(progress.Retrying), err)
	}
	verifyStore(t, dst, a)
}

// The same for a registry-to-registry copy (chunked upload): the upload
// attempt's deadline fires while the source is being read.
func TestCopyR2RAttemptDeadlineIsRetried(t *testing.T) {
	t.Parallel()
	regA, regB := registrytest.New(t), registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	src := seed(t, regA, "slow-r2r", a)
	regA.SetBandwidth(600<<10, 0)
	ev := &events{}
	opts := transfer.Options{Retry: slowLinkPolicy(), Observer: ev, StallTimeout: -1, LowSpeedLimit: -1}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dst := repo(t, regB, "slow-r2r")
	if _, err := transfer.Copy(ctx, src, "v1", dst, "", opts); err != nil {
		t.Fatalf("retries %v; err = %v", ev.reasons(progress.Retrying), err)
	}
	verifyStore(t, dst, a)
}

package retrypolicy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Config.Classify's doc: "Explicit marks (Permanent, Transient) and the
// caller's cancellation still come first." The code skips the hook for any
// error that wraps context.Canceled, and an attempt a watchdog cut (Cancel
// with ErrStalled, as transfer's stall and low-speed watchdogs do) fails
// with exactly that while the caller's context is alive: the caller's
// classifier is never asked about stalls, and cannot make them permanent.
func TestReview2ClassifySeesWatchdogStall(t *testing.T) {
	asked := 0
	cfg := Config{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Classify: func(err error) (Verdict, bool) {
			asked++
			if errors.Is(err, ErrStalled) {
				return Verdict{Retryable: false, Reason: "give up on stalls"}, true
			}
			return Verdict{}, false
		}}
	r, err := NewRetrier(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	actx, cancel := r.Begin(ctx, 0)
	r.Cancel(ErrStalled) // the watchdog
	<-actx.Done()
	rerr := r.Retry(ctx, actx.Err(), 0) // the attempt's request failed with its context
	cancel(nil)
	if asked == 0 || rerr == nil {
		t.Fatalf("the caller's classifier was asked %d times about a stall (caller's ctx alive); Retry = %v, want a final error", asked, rerr)
	}
}

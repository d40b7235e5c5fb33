package transfer

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

// oras-go turns a 429 or 503 into an errcode.ErrorResponse without its
// headers, so the server's Retry-After is lost before the error reaches the
// retry loop. sturdy talks to a registry through a copy of the caller's
// repository whose client notes the Retry-After of such answers in a slot
// the current attempt put in its context; the attempt attaches it to its
// error.

type retryAfterSlot struct{ wait atomic.Int64 }

type retryAfterKey struct{}

// captureRetryAfter returns ctx with a fresh slot.
func captureRetryAfter(ctx context.Context) (context.Context, *retryAfterSlot) {
	s := &retryAfterSlot{}
	return context.WithValue(ctx, retryAfterKey{}, s), s
}

// attach adds the noted wait to err.
func (s *retryAfterSlot) attach(err error) error {
	return retrypolicy.WithRetryAfter(err, time.Duration(s.wait.Load()))
}

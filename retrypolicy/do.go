package retrypolicy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/sturdyoci/sturdy/internal/ctxsleep"
)

// Error is the error of a Do call that did not succeed: the last attempt's
// error and how many attempts were made. errors.Is and errors.As reach the
// last attempt's error through it.
type Error struct {
	// Attempts is the number of attempts made, the failed last one included.
	Attempts int
	// Err is the last attempt's error (joined with the caller's context
	// error when the caller cancelled).
	Err error
}

func (e *Error) Error() string {
	if e.Attempts == 1 {
		return fmt.Sprintf("after 1 attempt: %v", e.Err)
	}
	return fmt.Sprintf("after %d attempts: %v", e.Attempts, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Do calls fn until it succeeds, fails with an error that is not retryable,
// or MaxAttempts attempts have failed. size is the number of bytes an
// attempt moves; it sets the attempt deadline and nothing else, so the number
// of attempts and the backoff between them are the same for 1 MiB and 1 TiB.
//
// Each attempt runs under its own context, derived from ctx with the
// deadline from cfg.PerAttemptTimeout(size); ctx itself is only for
// cancellation. When that deadline fires while ctx is alive, the attempt's
// error wraps ErrAttemptTimeout and is retried. Cancelling ctx stops Do at
// once, during an attempt or a backoff, with an error for which
// errors.Is(err, context.Canceled) (or DeadlineExceeded) holds.
//
// Between attempts Do sleeps an exponential backoff with jitter, or the
// Retry-After the error carries when that is longer (up to MaxRetryAfter).
// OnRetry is told each wait before it is slept. A failed Do returns an
// *Error. An invalid cfg returns an error wrapping ErrInvalidConfig without
// calling fn.
func Do(ctx context.Context, cfg Config, size int64, fn func(context.Context) error) error {
	return DoResumable(ctx, cfg, size, nil, fn)
}

// DoResumable is Do for a transfer that keeps what it has moved across
// attempts. committed reports the transfer's offset: the bytes of the size
// that are safely stored and will not be sent again. Before each attempt
// the deadline is computed on the bytes still to move, size - committed().
// Once the offset has moved forward by MinProgress bytes since the count
// last restarted -- in one attempt or over several -- a failure resets the
// no-progress count and the backoff. The next attempt starts at once
// (unless the server asked for a wait) after an attempt that moved at
// least MinProgress/(MaxAttempts-1) bytes, so a link that breaks every few GiB
// still finishes a 1 TiB blob without a backoff per break, a link whose
// connections each die after a few hundred KiB finishes too, and a link
// that never advances (or trickles) fails after MaxAttempts attempts.
// A nil committed makes
// DoResumable behave as Do.
func DoResumable(ctx context.Context, cfg Config, size int64, committed func() int64, fn func(context.Context) error) error {
	r, err := NewRetrier(cfg, size)
	if err != nil {
		return err
	}
	if committed == nil {
		committed = func() int64 { return 0 }
	}
	for {
		if err := ctx.Err(); err != nil {
			return &Error{Attempts: r.attempts, Err: cancelled(ctx, nil)}
		}
		actx, cancel := r.Begin(ctx, committed())
		err := fn(actx)
		if err == nil {
			cancel(nil)
			return nil
		}
		err = r.Retry(ctx, err, committed())
		cancel(nil)
		if err != nil {
			return err
		}
	}
}

// Retrier is the state of one retry loop, for code that cannot hand Do a
// function per attempt: a reader that heals itself between Read calls
// begins an attempt when it opens a connection and asks Retry when a read
// fails. Do and DoResumable are built on it. A Retrier is not safe for
// concurrent use, except Cancel.
type Retrier struct {
	cfg             Config
	size            int64
	sleep           func(context.Context, time.Duration) error
	bo              *backoff.ExponentialBackOff
	attempts        int
	withoutProgress int
	// mark is the offset at which the no-progress count last restarted
	// (the first attempt's start included); start is the current
	// attempt's.
	mark, start int64
	timeout     time.Duration

	mu     sync.Mutex
	actx   context.Context
	cancel context.CancelCauseFunc
}

// NewRetrier returns the loop state for moving size bytes under cfg, or an
// error wrapping ErrInvalidConfig.
func NewRetrier(cfg Config, size int64) (*Retrier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Retrier{cfg: cfg, size: size, sleep: cfg.sleep, bo: newBackoff(cfg)}
	if r.sleep == nil {
		r.sleep = ctxsleep.Sleep
	}
	return r, nil
}

// Attempts is the number of attempts begun so far.
func (r *Retrier) Attempts() int { return r.attempts }

// Begin starts the next attempt at offset (0 for a transfer that cannot
// resume). The returned context carries the attempt's deadline, computed on
// size - offset, and its number (AttemptNumber). The caller calls the
// cancel function once the attempt is over and Retry, if needed, has been
// asked; a cause given to Cancel while the attempt runs (ErrStalled from a
// watchdog) is named in Retry's error.
func (r *Retrier) Begin(ctx context.Context, offset int64) (context.Context, context.CancelCauseFunc) {
	if r.attempts == 0 || offset < r.mark {
		// A transfer that starts over (a new upload session, a blob
		// refetched after a digest mismatch) counts from its new start.
		r.mark = offset
	}
	r.attempts++
	return r.begin(ctx, offset)
}

// Continue is Begin for a transfer that goes on at offset over a new
// connection by design, not after a failure (a read that ends where a
// local copy of the next bytes begins, or that was measured before more
// connections are opened): it does not count an attempt. Before the first
// Begin it is Begin.
func (r *Retrier) Continue(ctx context.Context, offset int64) (context.Context, context.CancelCauseFunc) {
	if r.attempts == 0 {
		return r.Begin(ctx, offset)
	}
	return r.begin(ctx, offset)
}

func (r *Retrier) begin(ctx context.Context, offset int64) (context.Context, context.CancelCauseFunc) {
	r.start = offset
	r.timeout = r.cfg.PerAttemptTimeout(r.size - offset)
	actx := context.WithValue(ctx, attemptKey{}, r.attempts)
	stopTimer := context.CancelFunc(func() {})
	if r.timeout > 0 {
		actx, stopTimer = context.WithTimeoutCause(actx, r.timeout, ErrAttemptTimeout)
	}
	actx, cancel := context.WithCancelCause(actx)
	r.mu.Lock()
	r.actx, r.cancel = actx, cancel
	r.mu.Unlock()
	return actx, func(cause error) { cancel(cause); stopTimer() }
}

// Cancel ends the current attempt with cause. It is safe to call from
// another goroutine, and a no-op between attempts.
func (r *Retrier) Cancel(cause error) {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
}

// Retry decides what follows the current attempt's failure with err, the
// transfer having reached offset. When another attempt is due it calls
// OnRetry, sleeps the wait and returns nil. Otherwise it returns the final
// *Error: err is permanent, the attempts without progress are used up, or
// ctx ended (before or during the wait). An attempt deadline or a cause
// passed to Cancel is named in the error.
func (r *Retrier) Retry(ctx context.Context, err error, offset int64) error {
	err = r.explain(ctx, err)
	if ra, ok := RetryAfter(err); ok && r.cfg.MaxRetryAfter > 0 && ra > r.cfg.MaxRetryAfter {
		capRetryAfter(err, r.cfg.MaxRetryAfter)
	}
	if ctx.Err() != nil {
		return &Error{Attempts: r.attempts, Err: cancelled(ctx, err)}
	}
	v := r.cfg.Verdict(err)
	if !v.Retryable {
		return &Error{Attempts: r.attempts, Err: err}
	}
	// Progress is counted from where the count last restarted, not per
	// attempt: a link whose every connection dies after 500 KiB (a proxy's
	// per-connection byte limit) advances, and finishes.
	// A transfer that went back during the attempt counts from there.
	r.mark = min(r.mark, offset)
	progressed := offset-r.mark >= r.cfg.MinProgress
	if progressed {
		r.withoutProgress = 0
		r.bo.Reset()
		r.mark = offset
	}
	r.withoutProgress++
	if r.withoutProgress >= r.cfg.MaxAttempts {
		return &Error{Attempts: r.attempts, Err: err}
	}
	// An attempt that moved at a pace which reaches MinProgress before the
	// attempts run out proved the link works: reconnect at once, as
	// containers/image does, rather than sleep a backoff per break of a
	// link that breaks every few GiB (or every few hundred KiB). A
	// trickle below that pace backs off.
	var wait time.Duration
	if !progressed && offset-r.start < r.pace() {
		wait = min(r.bo.NextBackOff(), r.cfg.MaxBackoff)
	}
	if ra, ok := RetryAfter(err); ok && r.cfg.MaxRetryAfter > 0 {
		wait = max(wait, min(ra, r.cfg.MaxRetryAfter))
	}
	if r.cfg.OnRetry != nil {
		r.cfg.OnRetry(RetryInfo{
			Attempt:    r.attempts,
			Err:        err,
			Reason:     v.Reason,
			Backoff:    wait,
			Offset:     offset,
			Progressed: progressed,
		})
	}
	if r.sleep(ctx, wait) != nil {
		return &Error{Attempts: r.attempts, Err: cancelled(ctx, err)}
	}
	return nil
}

// pace is the advance of one attempt that reconnects at once: the share
// of MinProgress that the MaxAttempts-1 attempts a restarted count allows
// add up to (at least one byte).
func (r *Retrier) pace() int64 {
	n := int64(max(r.cfg.MaxAttempts-1, 1))
	return max((r.cfg.MinProgress+n-1)/n, 1)
}

// explain names what ended the attempt when its context did: the attempt
// deadline or a watchdog's cause, as long as the caller's ctx is alive.
func (r *Retrier) explain(ctx context.Context, err error) error {
	r.mu.Lock()
	actx := r.actx
	r.actx, r.cancel = nil, nil
	r.mu.Unlock()
	if actx == nil || ctx.Err() != nil || actx.Err() == nil {
		return err
	}
	cause := context.Cause(actx)
	switch {
	case cause == nil || errors.Is(cause, context.Canceled) || errors.Is(err, cause):
		return err
	case cause == ErrAttemptTimeout:
		return fmt.Errorf("%w (%s): %w", ErrAttemptTimeout, r.timeout, err)
	}
	return fmt.Errorf("%w: %w", cause, err)
}

// cancelled makes sure the caller's cancellation is what errors.Is sees,
// even when the attempt failed with something else as ctx ended.
func cancelled(ctx context.Context, err error) error {
	ctxErr, cause := ctx.Err(), context.Cause(ctx)
	if cause != ctxErr && cause != nil {
		// A custom cause (context.WithCancelCause) says why; ctx.Err()
		// is what callers test for.
		ctxErr = fmt.Errorf("%w: %w", ctxErr, cause)
	}
	switch {
	case err == nil:
		return ctxErr
	case errors.Is(err, ctx.Err()):
		return err
	}
	return fmt.Errorf("%w: %w", ctxErr, err)
}

type attemptKey struct{}

// AttemptNumber returns the 1-based number of the attempt whose context ctx
// is (or derives from), or 0 outside Do.
func AttemptNumber(ctx context.Context) int {
	n, _ := ctx.Value(attemptKey{}).(int)
	return n
}

func newBackoff(cfg Config) *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(cfg.InitialBackoff),
		backoff.WithMaxInterval(cfg.MaxBackoff),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		// The attempt count bounds the loop; the library's 15-minute
		// default would end a long resumable transfer by the clock.
		backoff.WithMaxElapsedTime(0),
	)
}

package retrypolicy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
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
// An attempt that fails after moving the offset forward by at least
// MinProgress bytes resets the no-progress count and the backoff, so a link
// that breaks every few GiB still finishes a 1 TiB blob, while a link that
// never advances fails after MaxAttempts attempts. A nil committed makes
// DoResumable behave as Do.
func DoResumable(ctx context.Context, cfg Config, size int64, committed func() int64, fn func(context.Context) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if committed == nil {
		committed = func() int64 { return 0 }
	}
	sleep := cfg.sleep
	if sleep == nil {
		sleep = sleepContext
	}
	bo := newBackoff(cfg)

	withoutProgress := 0
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return &Error{Attempts: attempt - 1, Err: cancelled(ctx, nil)}
		}
		start := committed()
		timeout := cfg.PerAttemptTimeout(size - start)
		err := runAttempt(ctx, attempt, timeout, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return &Error{Attempts: attempt, Err: cancelled(ctx, err)}
		}
		if !IsRetryable(err) {
			return &Error{Attempts: attempt, Err: err}
		}

		offset := committed()
		progressed := offset-start >= cfg.MinProgress
		if progressed {
			withoutProgress = 0
			bo.Reset()
		}
		withoutProgress++
		if withoutProgress >= cfg.MaxAttempts {
			return &Error{Attempts: attempt, Err: err}
		}

		wait := min(bo.NextBackOff(), cfg.MaxBackoff)
		if ra, ok := RetryAfter(err); ok && cfg.MaxRetryAfter > 0 {
			wait = max(wait, min(ra, cfg.MaxRetryAfter))
		}
		if cfg.OnRetry != nil {
			cfg.OnRetry(RetryInfo{
				Attempt:    attempt,
				Err:        err,
				Reason:     ShortReason(err),
				Backoff:    wait,
				Offset:     offset,
				Progressed: progressed,
			})
		}
		if sleep(ctx, wait) != nil {
			return &Error{Attempts: attempt, Err: cancelled(ctx, err)}
		}
	}
}

// runAttempt runs fn under its own deadline and names that deadline in the
// error when it is what ended the attempt.
func runAttempt(ctx context.Context, attempt int, timeout time.Duration, fn func(context.Context) error) error {
	actx := context.WithValue(ctx, attemptKey{}, attempt)
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		actx, cancel = context.WithTimeoutCause(actx, timeout, ErrAttemptTimeout)
	}
	defer cancel()
	err := fn(actx)
	if err != nil && ctx.Err() == nil && context.Cause(actx) == ErrAttemptTimeout {
		return fmt.Errorf("%w (%s): %w", ErrAttemptTimeout, timeout, err)
	}
	return err
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

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

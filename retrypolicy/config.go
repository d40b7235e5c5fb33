package retrypolicy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Production defaults. The zero Config uses every one of them.
const (
	// DefaultMaxAttempts is the number of attempts, the first included,
	// that make no progress before Do gives up.
	DefaultMaxAttempts = 6
	// DefaultInitialBackoff is the wait after the first failed attempt.
	DefaultInitialBackoff = 5 * time.Second
	// DefaultMaxBackoff caps the exponential wait (Retry-After may exceed it).
	DefaultMaxBackoff = 2 * time.Minute
	// DefaultMinThroughput is the slowest link, in bytes per second, an
	// attempt is given time for: 10 MiB/s.
	DefaultMinThroughput int64 = 10 << 20
	// DefaultSafetyFactor multiplies the time the bytes need at
	// DefaultMinThroughput.
	DefaultSafetyFactor = 2.0
	// DefaultMinAttemptTimeout is the floor of a size-derived attempt deadline.
	DefaultMinAttemptTimeout = 5 * time.Minute
	// DefaultMaxAttemptTimeout is the ceiling of a size-derived attempt deadline.
	DefaultMaxAttemptTimeout = 8 * time.Hour
	// DefaultMaxRetryAfter is the longest server-requested wait honoured.
	DefaultMaxRetryAfter = 15 * time.Minute
	// DefaultMinProgress is how far the committed offset of a resumable
	// transfer must move to count as progress: 1 MiB, the threshold
	// containers/image uses before it reconnects without counting a failure.
	DefaultMinProgress int64 = 1 << 20
)

// ErrInvalidConfig is wrapped by Validate's and Do's error for a Config with
// values that make no sense (a negative attempt count, a NaN factor, ...).
var ErrInvalidConfig = errors.New("retrypolicy: invalid config")

// Config is the retry policy. The zero value is the production policy; a
// zero field takes its default. Negative values are invalid except where a
// field says what a negative value means.
type Config struct {
	// MaxAttempts bounds the attempts, the first included, that make no
	// progress: 1 means no retry. With DoResumable the count restarts once
	// the committed offset has moved forward by MinProgress since it last
	// did, in one attempt or over several.
	MaxAttempts int
	// InitialBackoff is the wait after the first failure; it doubles (with
	// ±50% jitter) up to MaxBackoff.
	InitialBackoff time.Duration
	// MaxBackoff caps the computed wait. A server's Retry-After can exceed it.
	MaxBackoff time.Duration
	// AttemptTimeout: 0 derives each attempt's deadline from the bytes left
	// to move (see PerAttemptTimeout), < 0 sets no deadline, > 0 is fixed.
	AttemptTimeout time.Duration
	// MinThroughput is the slowest rate, bytes per second, a size-derived
	// deadline allows for.
	MinThroughput int64
	// SafetyFactor multiplies the time the bytes take at MinThroughput.
	SafetyFactor float64
	// MinAttemptTimeout and MaxAttemptTimeout clamp a size-derived deadline.
	MinAttemptTimeout time.Duration
	MaxAttemptTimeout time.Duration
	// MaxRetryAfter caps the wait a server asks for with Retry-After;
	// < 0 ignores Retry-After.
	MaxRetryAfter time.Duration
	// MinProgress is how many bytes DoResumable's attempts must commit,
	// together, to restart the attempt count and the backoff. An attempt
	// that commits MinProgress/(MaxAttempts-1) is followed by the next at
	// once.
	MinProgress int64
	// Classify, if set, is asked about every failed attempt's error before
	// the built-in table (see the package doc), the way go-retryablehttp
	// lets CheckRetry be replaced: it returns its verdict and true, or false
	// to leave the error to the table. Explicit marks (Permanent,
	// Transient) and the caller's cancellation still come first.
	Classify func(err error) (Verdict, bool)

	// OnRetry, if set, is called after a failed attempt that will be retried,
	// before the wait, with the wait that is about to be slept. It is never
	// called after the last attempt. It runs on Do's goroutine.
	OnRetry func(RetryInfo)

	// sleep replaces the real wait in this package's tests.
	sleep func(ctx context.Context, d time.Duration) error
}

// Verdict is a classifier's decision on an error: retry it or not, and a
// short human reason for progress bars and logs (it must not quote the
// error's text, which may hold secrets).
type Verdict struct {
	Retryable bool
	Reason    string
}

// RetryInfo describes a failed attempt that Do is about to retry.
type RetryInfo struct {
	// Attempt is the 1-based number of the attempt that failed, counting
	// every attempt of this Do call.
	Attempt int
	// Err is the attempt's error; Reason is the classification's reason
	// (ShortReason(Err), or Classify's).
	Err    error
	Reason string
	// Backoff is the wait Do sleeps now, before the next attempt.
	Backoff time.Duration
	// Offset is the committed offset after the failed attempt (DoResumable;
	// 0 for Do).
	Offset int64
	// Progressed reports that the offset has moved by at least MinProgress
	// since the no-progress count last restarted (this attempt's bytes
	// included), so the count and the backoff restarted and Backoff is 0
	// (or the server's Retry-After).
	Progressed bool

	// Op and Desc say what the attempt was doing, when the code running
	// the loop says so; Do leaves them empty. Package transfer sets Op to
	// one of "resolve", "exists", "mount", "fetch", "push", "tag",
	// "predecessors", "delete", and Desc to the blob or manifest
	// concerned (empty for "resolve" and "predecessors").
	Op   string
	Desc ocispec.Descriptor
}

// Validate reports the first invalid field, wrapped in ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.MaxAttempts < 0:
		return bad("MaxAttempts %d is negative", c.MaxAttempts)
	case c.InitialBackoff < 0:
		return bad("InitialBackoff %s is negative", c.InitialBackoff)
	case c.MaxBackoff < 0:
		return bad("MaxBackoff %s is negative", c.MaxBackoff)
	case c.MinThroughput < 0:
		return bad("MinThroughput %d is negative", c.MinThroughput)
	case math.IsNaN(c.SafetyFactor) || math.IsInf(c.SafetyFactor, 0) || c.SafetyFactor < 0:
		return bad("SafetyFactor %v is not a finite positive number", c.SafetyFactor)
	case c.MinAttemptTimeout < 0:
		return bad("MinAttemptTimeout %s is negative", c.MinAttemptTimeout)
	case c.MaxAttemptTimeout < 0:
		return bad("MaxAttemptTimeout %s is negative", c.MaxAttemptTimeout)
	case c.MinProgress < 0:
		return bad("MinProgress %d is negative", c.MinProgress)
	}
	n := c.withDefaults()
	if n.InitialBackoff > n.MaxBackoff {
		return bad("InitialBackoff %s exceeds MaxBackoff %s", n.InitialBackoff, n.MaxBackoff)
	}
	if n.MinAttemptTimeout > n.MaxAttemptTimeout {
		return bad("MinAttemptTimeout %s exceeds MaxAttemptTimeout %s", n.MinAttemptTimeout, n.MaxAttemptTimeout)
	}
	return nil
}

// withDefaults fills zero fields. It does not validate.
func (c Config) withDefaults() Config {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.InitialBackoff)
	}
	if c.MinThroughput == 0 {
		c.MinThroughput = DefaultMinThroughput
	}
	if c.SafetyFactor == 0 {
		c.SafetyFactor = DefaultSafetyFactor
	}
	if c.MinAttemptTimeout == 0 {
		c.MinAttemptTimeout = min(DefaultMinAttemptTimeout, positiveOr(c.MaxAttemptTimeout, DefaultMinAttemptTimeout))
	}
	if c.MaxAttemptTimeout == 0 {
		c.MaxAttemptTimeout = max(DefaultMaxAttemptTimeout, c.MinAttemptTimeout)
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.MinProgress == 0 {
		c.MinProgress = DefaultMinProgress
	}
	return c
}

func positiveOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// ComputePerAttemptTimeout is the production attempt deadline for moving size
// bytes: size / 10 MiB/s x 2, clamped to [5 min, 8 h]. See
// Config.PerAttemptTimeout.
func ComputePerAttemptTimeout(size int64) time.Duration {
	return Config{}.PerAttemptTimeout(size)
}

// PerAttemptTimeout is the deadline of one attempt that must move size bytes:
// size / MinThroughput x SafetyFactor, clamped to [MinAttemptTimeout,
// MaxAttemptTimeout]. A fixed AttemptTimeout (> 0) is returned as is and a
// negative one gives 0, meaning no deadline. Sizes of 0 or less get the floor;
// no size overflows. Invalid fields are replaced by their defaults here, so
// the function always returns a usable value; Do rejects them instead.
func (c Config) PerAttemptTimeout(size int64) time.Duration {
	switch {
	case c.AttemptTimeout > 0:
		return c.AttemptTimeout
	case c.AttemptTimeout < 0:
		return 0
	}
	c = c.sanitized()
	if size <= 0 {
		return c.MinAttemptTimeout
	}
	// float64 keeps the product of a 2^63 size and a factor from
	// overflowing; the clamp below brings it back into range.
	secs := float64(size) / float64(c.MinThroughput) * c.SafetyFactor
	if secs >= c.MaxAttemptTimeout.Seconds() {
		return c.MaxAttemptTimeout
	}
	d := time.Duration(secs * float64(time.Second))
	return min(max(d, c.MinAttemptTimeout), c.MaxAttemptTimeout)
}

// sanitized is withDefaults with invalid values replaced by defaults, for the
// functions that cannot return an error.
func (c Config) sanitized() Config {
	if c.MinThroughput < 0 {
		c.MinThroughput = 0
	}
	if math.IsNaN(c.SafetyFactor) || math.IsInf(c.SafetyFactor, 0) || c.SafetyFactor < 0 {
		c.SafetyFactor = 0
	}
	if c.MinAttemptTimeout < 0 {
		c.MinAttemptTimeout = 0
	}
	if c.MaxAttemptTimeout < 0 {
		c.MaxAttemptTimeout = 0
	}
	c = c.withDefaults()
	if c.MinAttemptTimeout > c.MaxAttemptTimeout {
		c.MinAttemptTimeout, c.MaxAttemptTimeout = DefaultMinAttemptTimeout, DefaultMaxAttemptTimeout
	}
	return c
}

// Package retrypolicy decides how long one attempt at moving a blob may
// take, whether a failed attempt is worth another, and how long to wait
// before it. It is pure policy: it moves no bytes and knows no registry.
//
// # The attempt loop
//
// [Do] runs a function until it succeeds, fails permanently, or runs out of
// attempts. Each attempt gets its own context whose deadline comes from the
// size of what it moves ([Config.PerAttemptTimeout]); the caller's context
// only cancels. When an attempt's deadline fires while the caller's context
// is alive, the error wraps [ErrAttemptTimeout] and is retried. Cancelling
// the caller's context returns at once, during an attempt or a backoff, with
// an error that matches context.Canceled.
//
// The number of attempts and the waits between them do not grow with the
// size: a 1 MiB and a 1 TiB blob have the same retry wall-clock, plus their
// transfer time. [DoResumable] is for transfers that keep what they moved: it
// computes each deadline on the bytes still to move, and once the committed
// offset has advanced by MinProgress since the attempt count last restarted
// (in one attempt or over several), a failure restarts the count and the
// backoff. An attempt that advanced at least MinProgress/(MaxAttempts-1)
// bytes is followed by the next at once (unless the server sent Retry-After); a
// smaller advance backs off. A 1 TB blob on a link that breaks every 10 GB
// finishes, and so does one behind a proxy that closes every connection
// after 500 KiB; a link that never gets past a byte, or trickles less than
// MinProgress over MaxAttempts attempts, fails after MaxAttempts attempts.
// Attempts are otherwise unbounded only in the sense that every MaxAttempts
// of them must commit MinProgress bytes, so a blob of S bytes takes at most
// MaxAttempts*S/MinProgress attempts.
//
// Waits are exponential with ±50% jitter (cenkalti/backoff/v4, with its
// elapsed-time limit switched off, so the attempt count alone bounds the
// loop), capped at MaxBackoff. A server's Retry-After (seconds or HTTP
// date), carried by a [*StatusError] or attached with [WithRetryAfter],
// lengthens the wait beyond MaxBackoff, up to MaxRetryAfter, however
// large the server's value (one beyond int64 seconds included); the error's
// text then shows the wait used, not the server's ask. OnRetry sees the
// failed attempt, its error and reason, and the exact wait about to be
// slept.
//
// # Defaults
//
// The zero [Config] is the production policy:
//
//	Field              Default     Meaning
//	MaxAttempts        6           attempts without progress, the first included; 1 = no retry
//	InitialBackoff     5 s         first wait; doubles with ±50% jitter
//	MaxBackoff         2 min       cap of the computed wait
//	AttemptTimeout     0           0 = from size, < 0 = none, > 0 = fixed
//	MinThroughput      10 MiB/s    slowest link a size-derived deadline allows for
//	SafetyFactor       2           multiplier on size / MinThroughput
//	MinAttemptTimeout  5 min       floor of the size-derived deadline
//	MaxAttemptTimeout  8 h         ceiling of the size-derived deadline
//	MaxRetryAfter      15 min      longest Retry-After honoured; < 0 ignores Retry-After
//	MinProgress        1 MiB       offset advance that restarts the attempt count (DoResumable)
//
// Size-derived deadlines with the defaults: up to 1.5 GiB 5 min, 10 GiB
// ~34 min, 70 GiB ~4 h, 140 GiB and more 8 h.
//
// Invalid values (negative counts, durations or sizes where the field does
// not give negative a meaning, a NaN or infinite SafetyFactor, a floor
// above its ceiling) make [Config.Validate] and Do return an error wrapping
// [ErrInvalidConfig] without calling the function. PerAttemptTimeout, which
// cannot fail, replaces them by their defaults instead.
//
// # Classification
//
// [IsRetryable] and [ShortReason] sort errors with errors.Is and errors.As,
// in this order; the first matching row decides. Joined errors
// (errors.Join) match a row if any of their parts does.
//
//	Rule                                                      Retry  Reason
//	Permanent(err) / Transient(err), outermost wins           mark   err's own, or "permanent/transient error"
//	ErrStalled                                                yes    stalled
//	ErrTooSlow                                                yes    too slow
//	ErrAttemptTimeout (attempt deadline, caller alive)        yes    attempt timeout
//	context.Canceled                                          no     canceled
//	context.DeadlineExceeded itself (the caller's deadline)   no     deadline exceeded
//	registry code DENIED / UNAUTHORIZED / NAME_UNKNOWN        no     denied / unauthorized / repository not found (HTTP n)
//	registry code TOOMANYREQUESTS                             yes    rate limited
//	registry code UNAVAILABLE                                 yes    unavailable (HTTP n)
//	HTTP 429                                                  yes    rate limited
//	HTTP 408, 425, 500, 502, 503, 504                         yes    HTTP n
//	any other HTTP status (400, 401, 403, 404, 405, 413, 416) no     HTTP n
//	content.ErrMismatchedDigest                               no     digest mismatch
//	content.ErrInvalidDescriptorSize, ErrTrailingData         no     size mismatch
//	errdef.ErrInvalidDigest / ErrNotFound / ErrAlreadyExists  no     invalid digest / not found / already exists
//	errdef.ErrSizeExceedsLimit / ErrUnsupported               no     size exceeds limit / unsupported
//	ECONNRESET / ECONNREFUSED / ECONNABORTED / EPIPE          yes    connection reset / refused / aborted, broken pipe
//	ETIMEDOUT                                                 yes    timeout
//	ENETUNREACH, EHOSTUNREACH / ENETDOWN, ENETRESET           yes    network unreachable / network down
//	ENOSPC / EDQUOT / EROFS                                   no     no space left on device / disk quota exceeded / read-only file system
//	EACCES, EPERM, fs.ErrPermission                           no     permission denied
//	x509 and tls certificate verification errors              no     certificate error
//	tls.RecordHeaderError / tls.AlertError                    no     TLS protocol error / TLS alert
//	HTTP/2 stream error, PROTOCOL/FRAME_SIZE/COMPRESSION/...  no     HTTP/2 stream error
//	HTTP/2 stream error, any other code (RST_STREAM)          yes    HTTP/2 stream reset
//	HTTP/2 GOAWAY                                             yes    HTTP/2 GOAWAY
//	HTTP/2 client connection lost                             yes    connection lost
//	*net.DNSError temporary or timeout / not found / other    yes/no DNS temporary failure / no such host / DNS error
//	io.ErrUnexpectedEOF                                       yes    unexpected EOF
//	io.EOF, net.ErrClosed, "server closed idle connection"    yes    connection closed
//	"HTTP/1.x transport connection broken" (a response cut    yes    connection broken
//	mid-status line or headers: malformed response/header)
//	net.Error with Timeout() (i/o timeout, TLS handshake)     yes    timeout / TLS handshake timeout
//	anything else                                             no     unclassified error
//
// The net package's i/o timeouts and net/http's client and header timeouts
// answer errors.Is(err, context.DeadlineExceeded) too; they are network
// timeouts and fall to the net.Error rule, since only the context's own
// DeadlineExceeded value counts as the caller's deadline.
//
// HTTP status comes from a [*StatusError] or oras-go's
// *errcode.ErrorResponse. Errno rules see through *net.OpError,
// *os.SyscallError, *url.Error and *fs.PathError. HTTP/2 stream errors are
// matched by type through the As method of net/http's bundled
// http2StreamError; GOAWAY, connection-lost and idle-close errors have no
// exported type in the standard library and are matched by their literal
// text, each such case commented in the source.
//
// Unknown errors are permanent: retrying a new kind of "permission denied"
// for an hour only hides it. Callers who know better wrap with [Transient]
// or [Permanent], or set Config.Classify: a function asked before the
// table (after those marks and the caller's cancellation) that decides
// the errors it knows and leaves the rest to the table. ShortReason never
// copies text out of an error, so it cannot leak URLs or tokens into a
// progress bar.
//
// # HTTP responses
//
// oras-go's errcode.ErrorResponse drops response headers, so the
// Retry-After of a 429 or 503 is lost by the time an error reaches the
// loop. Code that sends its own requests builds errors with
// [FromResponse], which keeps the status, the registry error codes and the
// Retry-After, and redacts the URL (every query value but the protocol's
// harmless ones). A TOOMANYREQUESTS error without the header whose message
// says "retry-after: <duration>" (GHCR's form) carries that wait. Code that
// has only the header uses [WithRetryAfter].
package retrypolicy

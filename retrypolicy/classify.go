package retrypolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Sentinel errors of the attempt loop. Transfer code wraps them; the
// classifier knows all of them as retryable.
var (
	// ErrAttemptTimeout: an attempt's own deadline fired while the caller's
	// context was still alive.
	ErrAttemptTimeout = errors.New("attempt timeout")
	// ErrStalled: no byte moved for the stall timeout.
	ErrStalled = errors.New("stalled")
	// ErrTooSlow: bytes moved, but slower than the low-speed limit.
	ErrTooSlow = errors.New("transfer too slow")
)

// Registry error codes the OCI distribution spec does not define but
// registries (distribution, Harbor, Docker Hub) send.
const (
	errorCodeTooManyRequests = "TOOMANYREQUESTS"
	errorCodeUnavailable     = "UNAVAILABLE"
)

// Verdict classifies err as the loop does: explicit marks (Permanent,
// Transient) first, then Classify if set, then the built-in table. The
// loop never asks about an error of the caller's cancelled context: it
// stops first.
func (c Config) Verdict(err error) Verdict {
	if c.Classify != nil && err != nil {
		var o *overrideError
		if !errors.As(err, &o) {
			if v, ok := c.Classify(err); ok {
				if v.Reason == "" {
					v.Reason = "caller's classifier"
				}
				return v
			}
		}
	}
	return classify(err)
}

// IsRetryable reports whether another attempt may succeed. Unknown errors are
// permanent: retrying "permission denied" for an hour only hides it. See the
// package documentation for the full table.
func IsRetryable(err error) bool {
	return classify(err).Retryable
}

// ShortReason is a short human label for err's class, such as
// "connection reset", "HTTP 503", "rate limited", "attempt timeout" or
// "stalled", for progress bars and logs. It never contains URLs or other
// text taken from the error, so it cannot leak tokens. nil gives "".
func ShortReason(err error) string {
	return classify(err).Reason
}

// Permanent marks err as not retryable, whatever its class. The mark is
// visible through wrapping: the outermost Permanent or Transient wins.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &overrideError{err: err, retryable: false}
}

// Transient marks err as retryable, whatever its class. Transient(nil) is nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &overrideError{err: err, retryable: true}
}

type overrideError struct {
	err       error
	retryable bool
}

func (e *overrideError) Error() string { return e.err.Error() }
func (e *overrideError) Unwrap() error { return e.err }

func retry(reason string) Verdict     { return Verdict{Retryable: true, Reason: reason} }
func permanent(reason string) Verdict { return Verdict{Retryable: false, Reason: reason} }

// classify is the one place where errors are sorted. Order matters: explicit
// marks first, then the loop's own sentinels, then caller cancellation (which
// must win over a network error it caused), then HTTP status, then content
// and registry sentinels, then transport errors from the innermost cause out.
func classify(err error) Verdict {
	if err == nil {
		return Verdict{}
	}
	if o := (*overrideError)(nil); errors.As(err, &o) {
		c := classify(o.err)
		c.Retryable = o.retryable
		if c.Reason == "" || c.Reason == reasonUnknown {
			if o.retryable {
				c.Reason = "transient error"
			} else {
				c.Reason = "permanent error"
			}
		}
		return c
	}
	switch {
	case errors.Is(err, ErrStalled):
		return retry("stalled")
	case errors.Is(err, ErrTooSlow):
		return retry("too slow")
	case errors.Is(err, ErrAttemptTimeout):
		return retry("attempt timeout")
	case errors.Is(err, context.Canceled):
		return permanent("canceled")
	case isContextDeadline(err):
		// Do turns an attempt's own deadline into ErrAttemptTimeout; a bare
		// DeadlineExceeded is the caller's deadline.
		return permanent("deadline exceeded")
	}
	if c, ok := classifyStatus(err); ok {
		return c
	}
	switch {
	case errors.Is(err, content.ErrMismatchedDigest):
		return permanent("digest mismatch")
	case errors.Is(err, content.ErrInvalidDescriptorSize), errors.Is(err, content.ErrTrailingData):
		return permanent("size mismatch")
	case errors.Is(err, errdef.ErrInvalidDigest):
		return permanent("invalid digest")
	case errors.Is(err, errdef.ErrNotFound):
		return permanent("not found")
	case errors.Is(err, errdef.ErrAlreadyExists):
		return permanent("already exists")
	case errors.Is(err, errdef.ErrSizeExceedsLimit):
		return permanent("size exceeds limit")
	case errors.Is(err, errdef.ErrUnsupported):
		return permanent("unsupported")
	}
	if c, ok := classifyErrno(err); ok {
		return c
	}
	if c, ok := classifyTLS(err); ok {
		return c
	}
	if c, ok := classifyHTTP2(err); ok {
		return c
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsTimeout || dnsErr.IsTemporary {
			return retry("DNS temporary failure")
		}
		if dnsErr.IsNotFound {
			return permanent("no such host")
		}
		return permanent("DNS error")
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return retry("unexpected EOF")
	case errors.Is(err, io.EOF):
		// In a transfer a bare EOF is a peer that hung up before the
		// response or the body was complete (net/http returns it for a
		// connection closed before the status line); finished reads never
		// surface io.EOF as an error.
		return retry("connection closed")
	case errors.Is(err, net.ErrClosed):
		return retry("connection closed")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// Not a string match: this type is unexported in net/http, but
		// its text is stable and the label helps an operator.
		if strings.Contains(err.Error(), "TLS handshake timeout") {
			return retry("TLS handshake timeout")
		}
		return retry("timeout")
	}
	if isServerClosedIdle(err) {
		return retry("connection closed")
	}
	if isConnectionBroken(err) {
		return retry("connection broken")
	}
	return permanent(reasonUnknown)
}

const reasonUnknown = "unclassified error"

// isContextDeadline reports whether context.DeadlineExceeded itself is in
// err's tree. errors.Is is not enough: the net package's i/o timeouts and
// net/http's client and header timeouts answer Is(DeadlineExceeded) too,
// and those are network timeouts, retryable like any other.
func isContextDeadline(err error) bool {
	for err != nil {
		if err == context.DeadlineExceeded {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if isContextDeadline(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// classifyStatus sorts HTTP status codes and registry error codes. A
// permanent registry code (DENIED, UNAUTHORIZED, NAME_UNKNOWN) wins over the
// status, a retryable one (TOOMANYREQUESTS, UNAVAILABLE) wins over a status
// that is otherwise permanent.
func classifyStatus(err error) (Verdict, bool) {
	code, codes, ok := statusOf(err)
	if !ok {
		return Verdict{}, false
	}
	for _, c := range codes {
		switch c {
		case errcode.ErrorCodeDenied:
			return permanent(fmt.Sprintf("denied (HTTP %d)", code)), true
		case errcode.ErrorCodeUnauthorized:
			return permanent(fmt.Sprintf("unauthorized (HTTP %d)", code)), true
		case errcode.ErrorCodeNameUnknown:
			return permanent(fmt.Sprintf("repository not found (HTTP %d)", code)), true
		}
	}
	for _, c := range codes {
		switch c {
		case errorCodeTooManyRequests:
			return retry("rate limited"), true
		case errorCodeUnavailable:
			return retry(fmt.Sprintf("unavailable (HTTP %d)", code)), true
		}
	}
	label := fmt.Sprintf("HTTP %d", code)
	switch code {
	case http.StatusTooManyRequests:
		return retry("rate limited"), true
	case http.StatusRequestTimeout, http.StatusTooEarly,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return retry(label), true
	}
	if code == 0 {
		return Verdict{}, false
	}
	return permanent(label), true
}

// statusOf finds the HTTP status in err: this package's StatusError first,
// then oras-go's errcode.ErrorResponse.
func statusOf(err error) (code int, codes []string, ok bool) {
	var se *StatusError
	if errors.As(err, &se) && se.StatusCode != 0 {
		code, codes = se.StatusCode, se.Codes
		ok = true
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		if !ok {
			code, ok = er.StatusCode, true
		}
		for _, e := range er.Errors {
			codes = append(codes, e.Code)
		}
	}
	return code, codes, ok
}

// classifyErrno sorts operating system errors, wherever they sit in the chain
// (*net.OpError, *os.SyscallError, *url.Error all unwrap to them).
func classifyErrno(err error) (Verdict, bool) {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return retry("connection reset"), true
	case errors.Is(err, syscall.ECONNREFUSED):
		return retry("connection refused"), true
	case errors.Is(err, syscall.ECONNABORTED):
		return retry("connection aborted"), true
	case errors.Is(err, syscall.EPIPE):
		return retry("broken pipe"), true
	case errors.Is(err, syscall.ETIMEDOUT):
		return retry("timeout"), true
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return retry("network unreachable"), true
	case errors.Is(err, syscall.ENETDOWN), errors.Is(err, syscall.ENETRESET):
		return retry("network down"), true
	case errors.Is(err, syscall.ENOSPC):
		return permanent("no space left on device"), true
	case errors.Is(err, syscall.EDQUOT):
		return permanent("disk quota exceeded"), true
	case errors.Is(err, syscall.EROFS):
		return permanent("read-only file system"), true
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, fs.ErrPermission):
		return permanent("permission denied"), true
	}
	return Verdict{}, false
}

// classifyTLS: certificate problems never fix themselves; a handshake that
// timed out is left to the net.Error timeout rule.
func classifyTLS(err error) (Verdict, bool) {
	var (
		verifyErr   *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
		rootsErr    x509.SystemRootsError
		constraint  x509.ConstraintViolationError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
	)
	switch {
	case errors.As(err, &verifyErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr),
		errors.As(err, &invalidErr), errors.As(err, &rootsErr), errors.As(err, &constraint):
		return permanent("certificate error"), true
	case errors.As(err, &recordErr):
		return permanent("TLS protocol error"), true
	case errors.As(err, &alertErr):
		return permanent("TLS alert"), true
	}
	return Verdict{}, false
}

// h2StreamError has the shape of net/http's bundled http2StreamError, whose
// As method copies itself into any struct with the same field names and
// convertible types: a typed match on an unexported type.
type h2StreamError struct {
	StreamID uint32
	Code     uint32
	Cause    error
}

// Error makes h2StreamError an error, as errors.As requires of its target.
func (e h2StreamError) Error() string { return fmt.Sprintf("stream error: stream ID %d", e.StreamID) }

// HTTP/2 error codes (RFC 9113 section 7) that say the request itself, not
// the moment, was wrong.
const (
	h2ProtocolError      = 0x1
	h2FrameSizeError     = 0x6
	h2CompressionError   = 0x9
	h2InadequateSecurity = 0xc
	h2HTTP11Required     = 0xd
)

func classifyHTTP2(err error) (Verdict, bool) {
	var se h2StreamError
	if errors.As(err, &se) {
		switch se.Code {
		case h2ProtocolError, h2FrameSizeError, h2CompressionError, h2InadequateSecurity, h2HTTP11Required:
			return permanent("HTTP/2 stream error"), true
		}
		return retry("HTTP/2 stream reset"), true
	}
	// String match, because the standard library exports no type for
	// these: http2GoAwayError and the client-connection errors are
	// unexported in net/http's bundle, and golang.org/x/net/http2 (which
	// does export them) is not a dependency of this module. Each text is
	// the literal the bundle (or x/net/http2) produces.
	msg := err.Error()
	switch {
	case strings.Contains(msg, "http2: server sent GOAWAY"),
		strings.Contains(msg, "http2: Transport received Server's graceful shutdown GOAWAY"):
		return retry("HTTP/2 GOAWAY"), true
	case strings.Contains(msg, "http2: client connection lost"):
		return retry("connection lost"), true
	case strings.Contains(msg, "stream error: stream ID"):
		// x/net/http2.StreamError, which lacks the bundle's As method.
		return retry("HTTP/2 stream reset"), true
	}
	return Verdict{}, false
}

// isServerClosedIdle matches net/http's unexported errServerClosedIdle: the
// server closed a kept-alive connection as the request went out. The string
// is the literal in net/http/transport.go.
func isServerClosedIdle(err error) bool {
	return strings.Contains(err.Error(), "http: server closed idle connection")
}

// isConnectionBroken matches the wrapper net/http's HTTP/1.x transport puts
// around an error reading a response on a connection it found broken after
// the request went out: a response cut in the middle of its status line or
// headers (a TCP proxy's byte limit, a middlebox dropping the connection)
// surfaces as a parse error of the partial text ("malformed HTTP response",
// "malformed HTTP status code", a textproto.ProtocolError "malformed MIME
// header"), not as io.ErrUnexpectedEOF. The wrapper has no exported type;
// the string is the literal in net/http/transport.go (mapRoundTripError).
// A server that always sends malformed headers is retried too, and fails
// after MaxAttempts.
func isConnectionBroken(err error) bool {
	return strings.Contains(err.Error(), "net/http: HTTP/1.x transport connection broken")
}

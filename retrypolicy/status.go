package retrypolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sturdyoci/sturdy/internal/redact"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// StatusError is an HTTP error response with what the retry loop needs from
// it: the status, the registry's error codes and the server's Retry-After.
// oras-go's errcode.ErrorResponse drops the response headers, so code that
// sends its own requests builds a StatusError with FromResponse, and code
// that only has an error uses WithRetryAfter.
type StatusError struct {
	// Method and URL of the request; the URL's secrets (upload _state,
	// pre-signed credentials) are already redacted.
	Method string
	URL    string
	// StatusCode is the HTTP status.
	StatusCode int
	// Codes are the registry error codes of an OCI error body, in order.
	Codes []string
	// RetryAfter is the wait the server asked for; 0 if none. The loop
	// waits at most Config.MaxRetryAfter; the error's text shows the wait
	// it used.
	RetryAfter time.Duration
	// Err is the parsed error body as an *errcode.ErrorResponse, so
	// errors.As finds oras-go's type too. It may be nil.
	Err error

	waited time.Duration // the wait the loop used, when it capped RetryAfter
}

func (e *StatusError) Error() string {
	var b strings.Builder
	if e.Method != "" || e.URL != "" {
		fmt.Fprintf(&b, "%s %s: ", e.Method, e.URL)
	}
	fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		b.WriteString(" " + t)
	}
	if len(e.Codes) > 0 {
		b.WriteString(" (" + strings.Join(e.Codes, ", ") + ")")
	}
	if e.waited > 0 {
		fmt.Fprintf(&b, ", retry after %s (capped)", e.waited)
	} else if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	return b.String()
}

func (e *StatusError) Unwrap() error { return e.Err }

// maxErrorBody bounds how much of an error body is read: registries send a
// few hundred bytes; a misbehaving proxy may send a whole HTML page.
const maxErrorBody = 64 << 10

// FromResponse builds a *StatusError from a non-success response. It reads
// at most 64 KiB of the body (and leaves closing it to the caller), parses
// an OCI error body if there is one, reads Retry-After (seconds or HTTP
// date) and redacts the request URL.
func FromResponse(resp *http.Response) error {
	se := &StatusError{StatusCode: resp.StatusCode}
	if req := resp.Request; req != nil {
		se.Method = req.Method
		se.URL = redact.URL(req.URL)
	}
	if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		se.RetryAfter = d
	}
	er := &errcode.ErrorResponse{Method: se.Method, StatusCode: resp.StatusCode}
	if resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		var parsed struct {
			Errors errcode.Errors `json:"errors"`
		}
		if json.Unmarshal(body, &parsed) == nil {
			er.Errors = parsed.Errors
			for _, e := range parsed.Errors {
				se.Codes = append(se.Codes, e.Code)
				if se.RetryAfter == 0 && e.Code == errorCodeTooManyRequests {
					se.RetryAfter = retryAfterInMessage(e.Message)
				}
			}
		}
	}
	se.Err = &redactedErrorResponse{er, se.URL}
	return se
}

// redactedErrorResponse is an errcode.ErrorResponse whose text uses the
// redacted URL (the embedded one has none).
type redactedErrorResponse struct {
	*errcode.ErrorResponse
	url string
}

func (e *redactedErrorResponse) Error() string {
	msg := http.StatusText(e.StatusCode)
	if len(e.Errors) > 0 {
		msg = e.Errors.Error()
	}
	return fmt.Sprintf("%s %q: response status code %d: %s", e.Method, e.url, e.StatusCode, msg)
}

func (e *redactedErrorResponse) Unwrap() error { return e.ErrorResponse }

// WithRetryAfter attaches a server-requested wait to err, for code that
// learned the wait from a response header but has an error from elsewhere.
// A wait <= 0 or a nil err returns err unchanged.
func WithRetryAfter(err error, wait time.Duration) error {
	if err == nil || wait <= 0 {
		return err
	}
	return &retryAfterError{err: err, wait: wait}
}

type retryAfterError struct {
	err    error
	wait   time.Duration
	waited time.Duration // the wait the loop used, when it capped wait
}

func (e *retryAfterError) Error() string {
	if e.waited > 0 {
		return fmt.Sprintf("%v (retry after %s, capped)", e.err, e.waited)
	}
	return fmt.Sprintf("%v (retry after %s)", e.err, e.wait)
}

// capRetryAfter records, in the Retry-After errors of err's chain that ask
// for more than limit, that the loop waits limit: their text then says
// what was done, not what a server asked ("retry after 27777h").
func capRetryAfter(err error, limit time.Duration) {
	for err != nil {
		switch e := err.(type) {
		case *retryAfterError:
			if e.wait > limit {
				e.waited = limit
			}
		case *StatusError:
			if e.RetryAfter > limit {
				e.waited = limit
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				capRetryAfter(e, limit)
			}
			return
		default:
			return
		}
	}
}
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter returns the server-requested wait carried by err, from
// WithRetryAfter or a *StatusError; the outermost one wins.
func RetryAfter(err error) (time.Duration, bool) {
	for err != nil {
		switch e := err.(type) {
		case *retryAfterError:
			return e.wait, true
		case *StatusError:
			if e.RetryAfter > 0 {
				return e.RetryAfter, true
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			var best time.Duration
			found := false
			for _, e := range u.Unwrap() {
				if d, ok := RetryAfter(e); ok && d > best {
					best, found = d, true
				}
			}
			return best, found
		default:
			return 0, false
		}
	}
	return 0, false
}

// ghcrRetryAfter is the wait GHCR writes into the message of a
// TOOMANYREQUESTS error instead of a Retry-After header:
// "retry-after: 880.092µs, allowed: 44000/minute".
var ghcrRetryAfter = regexp.MustCompile(`(?i)retry-after:\s*((?:[0-9][0-9.]*(?:ns|us|µs|ms|s|m|h))+)`)

// retryAfterInMessage reads a Go duration after "retry-after:" in a
// registry's error message; 0 if there is none.
func retryAfterInMessage(msg string) time.Duration {
	m := ghcrRetryAfter.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	d, err := time.ParseDuration(m[1])
	if err != nil || d < 0 {
		return 0
	}
	return d
}

// ParseRetryAfter parses a Retry-After header value: delay-seconds or an
// HTTP date, relative to now. A date in the past gives (0, true): the server
// asked for no wait. Malformed or negative values give (0, false).
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	// Beyond ~292 years a Duration overflows; nobody waits that long, and
	// the loop caps it at Config.MaxRetryAfter anyway.
	const maxSecs = int64(1<<63-1) / int64(time.Second)
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	} else if errors.Is(err, strconv.ErrRange) && v[0] != '-' {
		// All digits, beyond int64: a huge ask, not a missing one.
		return time.Duration(maxSecs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

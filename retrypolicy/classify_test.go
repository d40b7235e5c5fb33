package retrypolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

func opErr(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
}

func urlErr(err error) error {
	return &url.Error{Op: "Get", URL: "http://127.0.0.1:5000/v2/x/blobs/sha256:00", Err: err}
}

func errResp(status int, codes ...string) error {
	er := &errcode.ErrorResponse{Method: "GET", URL: &url.URL{Scheme: "http", Host: "h", Path: "/v2/"}, StatusCode: status}
	for _, c := range codes {
		er.Errors = append(er.Errors, errcode.Error{Code: c, Message: "m"})
	}
	return er
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// fakeH2StreamError has the field layout of net/http's http2StreamError and
// the same As method, standing in for it where no server is at hand.
type fakeH2StreamError struct {
	StreamID uint32
	Code     uint32
	Cause    error
}

func (e fakeH2StreamError) Error() string {
	return fmt.Sprintf("stream error: stream ID %d; %d", e.StreamID, e.Code)
}
func (e fakeH2StreamError) As(target any) bool {
	if t, ok := target.(*h2StreamError); ok {
		*t = h2StreamError(e)
		return true
	}
	return false
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		retryable bool
		reason    string
	}{
		{"nil", nil, false, ""},
		{"econnreset", syscall.ECONNRESET, true, "connection reset"},
		{"read reset in OpError", opErr("read", syscall.ECONNRESET), true, "connection reset"},
		{"reset in url.Error", urlErr(opErr("read", syscall.ECONNRESET)), true, "connection reset"},
		{"reset wrapped by fmt", fmt.Errorf("fetch sha256:ab: %w", urlErr(opErr("read", syscall.ECONNRESET))), true, "connection reset"},
		{"connection refused", urlErr(opErr("dial", syscall.ECONNREFUSED)), true, "connection refused"},
		{"connection aborted", opErr("write", syscall.ECONNABORTED), true, "connection aborted"},
		{"broken pipe", urlErr(opErr("write", syscall.EPIPE)), true, "broken pipe"},
		{"etimedout", opErr("read", syscall.ETIMEDOUT), true, "timeout"},
		{"network unreachable", opErr("dial", syscall.ENETUNREACH), true, "network unreachable"},
		{"unexpected EOF", io.ErrUnexpectedEOF, true, "unexpected EOF"},
		{"unexpected EOF wrapped", fmt.Errorf("copy: %w", io.ErrUnexpectedEOF), true, "unexpected EOF"},
		{"EOF in url.Error", urlErr(io.EOF), true, "connection closed"},
		{"net.ErrClosed", fmt.Errorf("read: %w", net.ErrClosed), true, "connection closed"},
		{"net timeout", urlErr(&net.OpError{Op: "read", Err: timeoutErr{}}), true, "timeout"},
		{"os deadline", fmt.Errorf("read: %w", os.ErrDeadlineExceeded), true, "timeout"},
		{"tls handshake timeout", urlErr(tlsHandshakeTimeout{}), true, "TLS handshake timeout"},
		{"dns temporary", &net.DNSError{Err: "server misbehaving", Name: "r", IsTemporary: true}, true, "DNS temporary failure"},
		{"dns timeout", urlErr(&net.OpError{Op: "dial", Err: &net.DNSError{Err: "timeout", IsTimeout: true}}), true, "DNS temporary failure"},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "r", IsNotFound: true}, false, "no such host"},
		{"http 408", errResp(408), true, "HTTP 408"},
		{"http 425", errResp(425), true, "HTTP 425"},
		{"http 429", errResp(429), true, "rate limited"},
		{"http 500", errResp(500), true, "HTTP 500"},
		{"http 502", errResp(502), true, "HTTP 502"},
		{"http 503", errResp(503), true, "HTTP 503"},
		{"http 504", errResp(504), true, "HTTP 504"},
		{"http 400", errResp(400), false, "HTTP 400"},
		{"http 401", errResp(401), false, "HTTP 401"},
		{"http 403", errResp(403), false, "HTTP 403"},
		{"http 404", errResp(404), false, "HTTP 404"},
		{"http 405", errResp(405), false, "HTTP 405"},
		{"http 413", errResp(413), false, "HTTP 413"},
		{"http 416", errResp(416), false, "HTTP 416"},
		{"http 501", errResp(501), false, "HTTP 501"},
		{"TOOMANYREQUESTS on 403", errResp(403, "TOOMANYREQUESTS"), true, "rate limited"},
		{"UNAVAILABLE code", errResp(503, "UNAVAILABLE"), true, "unavailable (HTTP 503)"},
		{"DENIED beats 503", errResp(503, "DENIED"), false, "denied (HTTP 503)"},
		{"UNAUTHORIZED", errResp(401, errcode.ErrorCodeUnauthorized), false, "unauthorized (HTTP 401)"},
		{"NAME_UNKNOWN", errResp(404, errcode.ErrorCodeNameUnknown), false, "repository not found (HTTP 404)"},
		{"StatusError 503", &StatusError{StatusCode: 503, RetryAfter: time.Second}, true, "HTTP 503"},
		{"StatusError 429 wrapped", fmt.Errorf("push: %w", &StatusError{StatusCode: 429}), true, "rate limited"},
		{"errdef not found", fmt.Errorf("sha256:ab: %w", errdef.ErrNotFound), false, "not found"},
		{"errdef invalid digest", errdef.ErrInvalidDigest, false, "invalid digest"},
		{"errdef already exists", errdef.ErrAlreadyExists, false, "already exists"},
		{"digest mismatch", fmt.Errorf("verify: %w", content.ErrMismatchedDigest), false, "digest mismatch"},
		{"size mismatch", content.ErrTrailingData, false, "size mismatch"},
		{"enospc", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, false, "no space left on device"},
		{"eacces", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, false, "permission denied"},
		{"fs.ErrPermission", fmt.Errorf("x: %w", fs.ErrPermission), false, "permission denied"},
		{"erofs", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EROFS}, false, "read-only file system"},
		{"edquot", &fs.PathError{Op: "write", Path: "/x", Err: syscall.EDQUOT}, false, "disk quota exceeded"},
		{"x509 unknown authority", urlErr(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false, "certificate error"},
		{"x509 hostname", urlErr(x509.HostnameError{Host: "h", Certificate: &x509.Certificate{}}), false, "certificate error"},
		{"tls record header", urlErr(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), false, "TLS protocol error"},
		{"context canceled", context.Canceled, false, "canceled"},
		{"canceled in url.Error", urlErr(context.Canceled), false, "canceled"},
		{"deadline exceeded bare", context.DeadlineExceeded, false, "deadline exceeded"},
		{"attempt timeout", fmt.Errorf("%w: %w", ErrAttemptTimeout, context.DeadlineExceeded), true, "attempt timeout"},
		{"stalled beats canceled", fmt.Errorf("%w: %w", ErrStalled, urlErr(context.Canceled)), true, "stalled"},
		{"too slow", ErrTooSlow, true, "too slow"},
		{"goaway string", errors.New("http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"\""), true, "HTTP/2 GOAWAY"},
		{"graceful goaway", urlErr(errors.New("http2: Transport received Server's graceful shutdown GOAWAY")), true, "HTTP/2 GOAWAY"},
		{"h2 stream internal", urlErr(fakeH2StreamError{StreamID: 3, Code: 0x2}), true, "HTTP/2 stream reset"},
		{"h2 stream refused", fakeH2StreamError{StreamID: 3, Code: 0x7}, true, "HTTP/2 stream reset"},
		{"h2 stream protocol", fakeH2StreamError{StreamID: 3, Code: 0x1}, false, "HTTP/2 stream error"},
		{"h2 connection lost", errors.New("http2: client connection lost"), true, "connection lost"},
		{"server closed idle", urlErr(errors.New("http: server closed idle connection")), true, "connection closed"},
		{"unknown", errors.New("something odd"), false, "unclassified error"},
		{"permanent override", Permanent(io.ErrUnexpectedEOF), false, "unexpected EOF"},
		{"transient override", Transient(errors.New("flaky backend")), true, "transient error"},
		{"transient on 404", Transient(errResp(404)), true, "HTTP 404"},
		{"outer override wins", Permanent(fmt.Errorf("x: %w", Transient(io.EOF))), false, "connection closed"},
		{"joined: reset and not found", errors.Join(errdef.ErrNotFound, syscall.ECONNRESET), false, "not found"},
		{"joined: eof and reset", errors.Join(errors.New("x"), syscall.ECONNRESET), true, "connection reset"},
		{"joined: enospc and timeout", errors.Join(timeoutErr{}, syscall.ENOSPC), false, "no space left on device"},
		{"Error wraps retryable", &Error{Attempts: 6, Err: io.ErrUnexpectedEOF}, true, "unexpected EOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := IsRetryable(c.err); got != c.retryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", c.err, got, c.retryable)
			}
			if got := ShortReason(c.err); got != c.reason {
				t.Errorf("ShortReason(%v) = %q, want %q", c.err, got, c.reason)
			}
		})
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
}

// tlsHandshakeTimeout mirrors net/http's unexported tlsHandshakeTimeoutError.
type tlsHandshakeTimeout struct{}

func (tlsHandshakeTimeout) Timeout() bool   { return true }
func (tlsHandshakeTimeout) Temporary() bool { return true }
func (tlsHandshakeTimeout) Error() string   { return "net/http: TLS handshake timeout" }

func TestClassifyRealConnectionReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 1024)
			_, _ = c.Read(buf)
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	}()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	_, err = client.Get("http://" + ln.Addr().String() + "/")
	if err == nil {
		t.Fatal("want an error")
	}
	// Depending on timing the client sees the RST on read or the close
	// before any response; both must be retryable.
	if !IsRetryable(err) {
		t.Fatalf("IsRetryable(%v) = false", err)
	}
	if r := ShortReason(err); r != "connection reset" && r != "connection closed" {
		t.Fatalf("ShortReason(%v) = %q", err, r)
	}
}

// A connection cut in the middle of a response's status line or headers
// (a TCP proxy's byte limit, a middlebox dropping the connection) is
// retryable, whatever net/http makes of the partial text: io.EOF,
// io.ErrUnexpectedEOF, a malformed status line or a malformed header line.
func TestClassifyRealResponseCutMidHeaders(t *testing.T) {
	const full = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello"
	for _, cut := range []int{0, 3, 7, 11, 17, 20, 36, 40, 66} {
		t.Run(strconv.Quote(full[:cut]), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				_, _ = io.WriteString(c, full[:cut])
			}()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := client.Get("http://" + ln.Addr().String() + "/")
			if err == nil {
				resp.Body.Close()
				t.Fatal("want an error")
			}
			if !IsRetryable(err) {
				t.Fatalf("IsRetryable(%v) = false (%q)", err, ShortReason(err))
			}
		})
	}
}

func TestClassifyRealConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = http.Get("http://" + addr + "/")
	if !IsRetryable(err) || ShortReason(err) != "connection refused" {
		t.Fatalf("got %v (%q)", err, ShortReason(err))
	}
}

func TestClassifyRealHTTP2StreamReset(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		_, _ = w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the HTTP/2 server answers with RST_STREAM
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("want HTTP/2, got %s", resp.Proto)
		}
	}
	if err == nil {
		t.Fatal("want a stream error")
	}
	if !IsRetryable(err) || ShortReason(err) != "HTTP/2 stream reset" {
		t.Fatalf("got %v (%q, retryable %v)", err, ShortReason(err), IsRetryable(err))
	}
}

func TestClassifyRealCertificateError(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer srv.Close()
	_, err := http.Get(srv.URL) // default client does not trust the test CA
	if IsRetryable(err) || ShortReason(err) != "certificate error" {
		t.Fatalf("got %v (%q)", err, ShortReason(err))
	}
}

func TestShortReasonNeverLeaksURL(t *testing.T) {
	err := urlErr(errors.New("weird thing at http://h/v2/x/blobs/uploads/u?_state=SECRET"))
	if r := ShortReason(err); strings.Contains(r, "SECRET") || strings.Contains(r, "http") {
		t.Fatalf("ShortReason leaked: %q", r)
	}
}

func FuzzClassify(f *testing.F) {
	seeds := []string{"", "connection reset by peer", "http2: server sent GOAWAY and closed the connection",
		"stream error: stream ID 1; INTERNAL_ERROR", "http: server closed idle connection", "\x00\xff"}
	for _, s := range seeds {
		f.Add(s, 0, 0)
	}
	f.Add("x", 503, 1)
	f.Add("x", 429, 2)
	f.Fuzz(func(t *testing.T, msg string, status int, wrap int) {
		var err error = errors.New(msg)
		switch wrap % 6 {
		case 1:
			err = &StatusError{StatusCode: status, Codes: []string{msg}, Err: err}
		case 2:
			err = errResp(status, msg)
		case 3:
			err = urlErr(err)
		case 4:
			err = errors.Join(err, &StatusError{StatusCode: status})
		case 5:
			err = Transient(fmt.Errorf("%s: %w", msg, err))
		}
		r1, s1 := IsRetryable(err), ShortReason(err)
		r2, s2 := IsRetryable(err), ShortReason(err)
		if r1 != r2 || s1 != s2 {
			t.Fatalf("not deterministic: %v/%q vs %v/%q", r1, s1, r2, s2)
		}
		if s1 == "" {
			t.Fatalf("empty reason for non-nil error %v", err)
		}
	})
}

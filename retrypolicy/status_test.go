package retrypolicy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

func response(status int, header http.Header, body string) *http.Response {
	u, _ := url.Parse("http://127.0.0.1:5000/v2/m/blobs/uploads/abc?_state=SECRETSTATE&digest=sha256%3Aab")
	if header == nil {
		header = http.Header{}
	}
	return &http.Response{
		StatusCode: status,
		Header:     header,
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    &http.Request{Method: http.MethodPatch, URL: u},
	}
}

func TestFromResponse(t *testing.T) {
	err := FromResponse(response(http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}},
		`{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`))
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 429 || se.RetryAfter != 7*time.Second {
		t.Fatalf("err = %#v", err)
	}
	if d, ok := RetryAfter(fmt.Errorf("blob sha256:ab: %w", err)); !ok || d != 7*time.Second {
		t.Fatalf("RetryAfter = %s, %v", d, ok)
	}
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != 429 || er.Errors[0].Code != "TOOMANYREQUESTS" {
		t.Fatalf("errcode.ErrorResponse not reachable: %v", err)
	}
	if !IsRetryable(err) || ShortReason(err) != "rate limited" {
		t.Fatalf("class = %v %q", IsRetryable(err), ShortReason(err))
	}
	for _, text := range []string{err.Error(), se.Err.Error()} {
		if strings.Contains(text, "SECRETSTATE") {
			t.Fatalf("upload state leaked: %s", text)
		}
	}
	if !strings.Contains(err.Error(), "digest=sha256") {
		t.Errorf("want the harmless query kept: %s", err)
	}
}

func TestFromResponseNonJSONBody(t *testing.T) {
	err := FromResponse(response(http.StatusBadGateway, nil, "<html>bad gateway</html>"))
	if !IsRetryable(err) || ShortReason(err) != "HTTP 502" {
		t.Fatalf("%v %q", err, ShortReason(err))
	}
	if _, ok := RetryAfter(err); ok {
		t.Fatal("no Retry-After was sent")
	}
}

func TestWithRetryAfter(t *testing.T) {
	base := errResp(503)
	if WithRetryAfter(nil, time.Second) != nil || WithRetryAfter(base, 0) != base {
		t.Fatal("WithRetryAfter must pass nil and zero waits through")
	}
	err := WithRetryAfter(base, 3*time.Second)
	if d, ok := RetryAfter(err); !ok || d != 3*time.Second {
		t.Fatalf("RetryAfter = %s %v", d, ok)
	}
	if !errors.Is(err, base) || ShortReason(err) != "HTTP 503" {
		t.Fatalf("wrapping broke the chain: %v", err)
	}
	joined := errors.Join(WithRetryAfter(base, time.Second), WithRetryAfter(base, 9*time.Second))
	if d, _ := RetryAfter(joined); d != 9*time.Second {
		t.Fatalf("joined RetryAfter = %s, want the longest", d)
	}
}

// GHCR writes its wait into the message of a TOOMANYREQUESTS error, with no
// Retry-After header; a header, when there is one, wins.
func TestFromResponseRetryAfterInMessage(t *testing.T) {
	cases := []struct {
		header http.Header
		msg    string
		want   time.Duration
	}{
		{nil, "retry-after: 880.092µs, allowed: 44000/minute", 880092 * time.Nanosecond},
		{nil, "retry-after: 10.3ms, allowed: 2000/minute", 10300 * time.Microsecond},
		{nil, "Retry-After: 2m30s", 150 * time.Second},
		{nil, "slow down", 0},
		{nil, "retry-after: soon", 0},
		{http.Header{"Retry-After": {"7"}}, "retry-after: 1s", 7 * time.Second},
	}
	for _, c := range cases {
		err := FromResponse(response(http.StatusTooManyRequests, c.header,
			`{"errors":[{"code":"TOOMANYREQUESTS","message":"`+c.msg+`"}]}`))
		if d, _ := RetryAfter(err); d != c.want {
			t.Errorf("%q: RetryAfter = %s, want %s", c.msg, d, c.want)
		}
	}
}

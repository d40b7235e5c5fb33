package retrypolicy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Real timeouts from the standard library, not look-alikes: net's and
// net/http's timeout errors answer Is(context.DeadlineExceeded) too, yet
// they are network timeouts and retryable; only the context's own value is
// the caller's deadline. (Found in review: they were classified permanent.)
func TestRealNetTimeoutsAreRetryable(t *testing.T) {
	// 1. Dialer.Timeout (http.DefaultTransport dials with a 30 s one).
	d := net.Dialer{Timeout: time.Nanosecond}
	_, dialErr := d.Dial("tcp", "127.0.0.1:9")
	if dialErr == nil {
		t.Skip("dial succeeded")
	}

	// 2. Transport.ResponseHeaderTimeout, 3. http.Client.Timeout.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer srv.Close()
	tr := &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond}
	defer tr.CloseIdleConnections()
	_, rhtErr := (&http.Client{Transport: tr}).Get(srv.URL)
	_, ctErr := (&http.Client{Timeout: 50 * time.Millisecond}).Get(srv.URL)

	for name, err := range map[string]error{"dial timeout": dialErr, "response header timeout": rhtErr, "client timeout": ctErr} {
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if !IsRetryable(err) {
			t.Errorf("%s: %q classified permanent (%q); want retryable timeout", name, err, ShortReason(err))
		}
	}

	// And through Do, under a live parent context: one attempt only.
	n := 0
	err := Do(context.Background(), Config{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, 0,
		func(context.Context) error { n++; return rhtErr })
	if n != 3 {
		t.Errorf("Do made %d attempts on a response-header timeout, want 3: %v", n, err)
	}
}

package transfer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

// silentServer accepts connections, reads the request head, then sends
// head (if any) and body bytes as script says, and otherwise nothing. It is
// a wire fault, not a registry: the registry-level tests are in examples/e2e.
func silentServer(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				script(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/v2/a/blobs/uploads/u?_state=SECRET"
}

func get(t *testing.T, ctx context.Context, u string) (*http.Response, error) {
	return do(t, ctx, http.MethodGet, u)
}

func do(t *testing.T, ctx context.Context, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	return watchRequest(client, req, 100*time.Millisecond)
}

func TestRequestWatchCutsSilentHeaders(t *testing.T) {
	u := silentServer(t, func(net.Conn) {})
	start := time.Now()
	_, err := get(t, context.Background(), u)
	if !errors.Is(err, retrypolicy.ErrStalled) || !retrypolicy.IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable stall", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cut after %s", d)
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error leaks the upload state: %v", err)
	}
	var ue *url.Error
	if !errors.As(err, &ue) || strings.Contains(ue.URL, "SECRET") {
		t.Fatalf("*url.Error's URL not redacted: %v", ue)
	}
}

func TestRequestWatchAllowsPatience(t *testing.T) {
	u := silentServer(t, func(c net.Conn) {
		time.Sleep(400 * time.Millisecond) // a registry verifying a digest
		io.WriteString(c, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
	})
	resp, err := do(t, withPatience(context.Background(), time.Second), http.MethodPut, u)
	if err != nil {
		t.Fatalf("a wait within the patience was cut: %v", err)
	}
	resp.Body.Close()

	// Only the PUT that completes an upload is given patience.
	if _, err := do(t, withPatience(context.Background(), time.Second), http.MethodPost, u); !errors.Is(err, retrypolicy.ErrStalled) {
		t.Fatalf("a POST under the same context: err = %v, want a stall", err)
	}

	// Patience is bounded too.
	u = silentServer(t, func(net.Conn) {})
	start := time.Now()
	if _, err := do(t, withPatience(context.Background(), 300*time.Millisecond), http.MethodPut, u); !errors.Is(err, retrypolicy.ErrStalled) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second {
		t.Fatalf("cut after %s, want the patience", d)
	}
}

func TestRequestWatchCutsSilentBody(t *testing.T) {
	u := silentServer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
	})
	resp, err := get(t, context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, retrypolicy.ErrStalled) {
		t.Fatalf("err = %v, want a stall", err)
	}
}

// A caller that does not read the body for a while is not the server's
// silence.
func TestRequestWatchIgnoresSlowReader(t *testing.T) {
	u := silentServer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
	})
	resp, err := get(t, context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(300 * time.Millisecond)
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "abc" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestRequestWatchCallerCancelIsNotAStall(t *testing.T) {
	u := silentServer(t, func(net.Conn) {})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := get(t, ctx, u)
	if !errors.Is(err, context.Canceled) || errors.Is(err, retrypolicy.ErrStalled) {
		t.Fatalf("err = %v, want the caller's cancellation", err)
	}
}

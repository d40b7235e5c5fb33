package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sturdyoci/sturdy/internal/redact"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Every request sturdy sends to a registry (HEADs, manifests, tags, the
// POST that opens an upload, its status GETs, PATCHes, the commit, DELETE)
// goes through watchRequest: a server that stays silent for the stall
// timeout while sturdy waits on it is cut, whatever the request, time to
// response headers included. Silence is measured only while sturdy waits
// on the server: time spent producing a request body (reading the source
// of an upload, which has its own watchdog) and time the caller spends
// not reading a response body are not the server's.
//
// One wait is exempt: after the whole body of a PUT that completes an
// upload has been sent, a registry verifies the digest before it answers,
// which may take minutes for a large blob. Such requests carry a longer
// allowance (withPatience), still bounded.

type patienceKey struct{}

type watchedKey struct{}

// alreadyWatched marks requests made with ctx as watched by their caller
// (a healing reader's watchdog runs from the request on, on the time spent
// waiting for the source): watching them again would only cost a goroutine
// and two clock reads per Read.
func alreadyWatched(ctx context.Context) context.Context {
	return context.WithValue(ctx, watchedKey{}, true)
}

// withPatience lets PUT requests made with ctx wait up to d for their
// response headers once their body is sent, instead of the stall timeout.
func withPatience(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, patienceKey{}, d)
}

// commitPatience is how long a registry may stay silent verifying a blob
// of size bytes before it answers the final PUT: the stall timeout plus a
// second for every 32 MiB (a registry hashing or copying on its storage at
// 32 MiB/s), never longer than the attempt deadline of the whole blob.
func commitPatience(stall time.Duration, cfg retrypolicy.Config, size int64) time.Duration {
	d := max(stall, 0) + time.Duration((size+32<<20-1)/(32<<20))*time.Second
	if t := cfg.PerAttemptTimeout(size); t > 0 {
		d = min(d, t)
	}
	return max(d, stall)
}

// watchRequest sends req through c, cut after stall of silence, and redacts
// the URL of a transport error in place (so errors.As finds it redacted
// too). stall <= 0 leaves the request unwatched.
func watchRequest(c interface {
	Do(*http.Request) (*http.Response, error)
}, req *http.Request, stall time.Duration) (*http.Response, error) {
	if watched, _ := req.Context().Value(watchedKey{}).(bool); stall <= 0 || watched {
		resp, err := c.Do(req)
		return resp, redactURLError(err)
	}
	parent := req.Context()
	ctx, cancel := context.WithCancelCause(parent)
	w := &requestWatch{start: time.Now(), stall: stall, headerLimit: stall, cancel: cancel, done: make(chan struct{})}
	// Patience is for the PUT that completes an upload, not for the POST
	// that opens one under the same context.
	if d, ok := parent.Value(patienceKey{}).(time.Duration); ok && d > stall && req.Method == http.MethodPut {
		w.headerLimit = d
	}
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedRequestBody{ReadCloser: req.Body, w: w}
		w.sending.Store(true)
		if gb := req.GetBody; gb != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				rc, err := gb()
				if err != nil || rc == nil || rc == http.NoBody {
					return rc, err
				}
				w.sending.Store(true)
				return &watchedRequestBody{ReadCloser: rc, w: w}, nil
			}
		}
	}
	go w.run(ctx)
	resp, err := c.Do(req)
	if err != nil {
		err = w.explain(parent, ctx, err)
		w.stop()
		cancel(nil)
		return nil, redactURLError(err)
	}
	w.headers()
	resp.Body = &watchedResponseBody{ReadCloser: resp.Body, w: w, parent: parent, ctx: ctx}
	return resp, nil
}

// requestWatch tracks one request's silence.
type requestWatch struct {
	start       time.Time
	stall       time.Duration
	headerLimit time.Duration
	cancel      context.CancelCauseFunc

	moved    atomic.Int64 // request body bytes taken, response bytes read, +1 for the headers
	sending  atomic.Bool  // a request body is still being read by the transport
	inBody   activeClock  // time the transport spent inside the request body's Read
	reading  activeClock  // time spent inside the response body's Read
	headerAt atomic.Int64 // server-wait time banked when the headers came; 0: not yet
	gotHead  atomic.Bool

	once sync.Once
	done chan struct{}
}

// waited is the time spent waiting on the server so far.
func (w *requestWatch) waited() time.Duration {
	if w.gotHead.Load() {
		return time.Duration(w.headerAt.Load()) + w.reading.elapsed()
	}
	return time.Since(w.start) - w.inBody.elapsed()
}

func (w *requestWatch) limit() time.Duration {
	if w.gotHead.Load() || w.sending.Load() {
		return w.stall
	}
	return w.headerLimit
}

func (w *requestWatch) headers() {
	w.headerAt.Store(int64(time.Since(w.start) - w.inBody.elapsed()))
	w.gotHead.Store(true)
	w.moved.Add(1)
}

func (w *requestWatch) run(ctx context.Context) {
	tick := max(w.stall/8, time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	last, lastAt := w.moved.Load(), w.waited()
	for {
		select {
		case <-w.done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, n := w.waited(), w.moved.Load()
		if n != last {
			last, lastAt = n, now
			continue
		}
		if lim := w.limit(); now-lastAt >= lim {
			w.cancel(&silenceError{lim})
			return
		}
	}
}

func (w *requestWatch) stop() {
	w.once.Do(func() { close(w.done) })
}

// explain names the watchdog as the cause of err when it cut the request
// while the caller's context was alive.
func (w *requestWatch) explain(parent, ctx context.Context, err error) error {
	var se *silenceError
	if parent.Err() == nil && errors.As(context.Cause(ctx), &se) && !errors.Is(err, retrypolicy.ErrStalled) {
		return fmt.Errorf("%w: %w", se, err)
	}
	return err
}

// silenceError is the watchdog's cause: a retryable stall.
type silenceError struct{ d time.Duration }

func (e *silenceError) Error() string {
	return fmt.Sprintf("%v: the server sent nothing for %s", retrypolicy.ErrStalled, e.d)
}
func (e *silenceError) Unwrap() error { return retrypolicy.ErrStalled }

type watchedRequestBody struct {
	io.ReadCloser
	w *requestWatch
}

func (b *watchedRequestBody) Read(p []byte) (int, error) {
	b.w.inBody.enter()
	n, err := b.ReadCloser.Read(p)
	b.w.inBody.leave()
	b.w.moved.Add(int64(n))
	if err != nil {
		// Sent whole (or given up): what follows is the server's turn.
		b.w.sending.Store(false)
	}
	return n, err
}

func (b *watchedRequestBody) Close() error {
	b.w.sending.Store(false)
	return b.ReadCloser.Close()
}

type watchedResponseBody struct {
	io.ReadCloser
	w           *requestWatch
	parent, ctx context.Context
	closeOnce   sync.Once
}

func (b *watchedResponseBody) Read(p []byte) (int, error) {
	b.w.reading.enter()
	n, err := b.ReadCloser.Read(p)
	b.w.reading.leave()
	b.w.moved.Add(int64(n))
	if err != nil && err != io.EOF {
		err = b.w.explain(b.parent, b.ctx, err)
	}
	return n, err
}

func (b *watchedResponseBody) Close() error {
	err := b.ReadCloser.Close()
	b.closeOnce.Do(func() {
		b.w.stop()
		b.w.cancel(nil)
	})
	return err
}

// redactURLError takes the secrets out of a *url.Error's URL in place: the
// URL of a redirected blob GET is a pre-signed storage URL, and callers
// that reach the *url.Error through errors.As must not find it either.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redact.String(ue.URL)
	}
	return err
}

package registrytest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors the registry's handler sees when a fault cuts its request or
// response short; clients only ever see the effect on the wire.
var (
	errReset     = errors.New("registrytest: connection reset by fault")
	errStalled   = errors.New("registrytest: connection stalled by fault")
	errTruncated = errors.New("registrytest: response truncated by fault")
	errDropped   = errors.New("registrytest: response dropped by fault")
	errClosing   = errors.New("registrytest: registry closing")
)

// serveHTTP is the middleware in front of distribution: same server, same
// connection, so the Host header distribution builds upload Locations from
// is the client's own.
func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	conn := connFrom(req.Context())
	if !r.enter() {
		conn.reset()
		return
	}
	defer r.inflight.Done()

	info := classify(req)
	r.stats.request(info.kind)
	x := &exchange{reg: r, req: req, conn: conn, info: info, w: w}
	defer x.finish()

	if info.upload != "" {
		r.releaseUpload(info.upload)
	}
	var respond *Action
	var bodyActs []armed
	for _, a := range r.arm(info) {
		switch a.op {
		case opDelay:
			x.delay += a.delay
		case opRespond:
			if respond == nil {
				respond = &a.Action
			}
		case opIgnoreRange:
			req.Header.Del("Range")
			req.Header.Del("If-Range")
		case opDropResponse:
			x.drop = true
		case opResetAfter, opResetEvery, opStall, opTrickle, opCorrupt, opTruncate:
			bodyActs = append(bodyActs, a)
		}
	}
	if respond != nil {
		x.respond(*respond)
		x.handled = true
		return
	}

	// Body faults go with the request body when there is one.
	body := &faultBody{x: x, body: req.Body}
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0 {
		start := rangeStart(req.Header.Get("Content-Range"))
		for _, a := range bodyActs {
			if a.op == opTruncate {
				x.respActs = append(x.respActs, a)
			} else {
				body.triggers = appendTrigger(body.triggers, a, start)
			}
		}
	} else {
		x.respActs = bodyActs
	}
	if req.Body != nil {
		req.Body = body
	}
	r.handler.ServeHTTP(x, req)
	x.handled = true
}

// enter registers an in-flight request, unless the registry is closing.
func (r *Registry) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.inflight.Add(1)
	return true
}

// trigger is a body fault placed at a body offset.
type trigger struct {
	at int64
	armed
}

// appendTrigger places a at its body offset for a body that starts at blob
// offset start, keeping the list sorted by offset (stable, so faults at one
// offset fire in injection order).
func appendTrigger(ts []trigger, a armed, start int64) []trigger {
	at := a.n
	switch a.op {
	case opResetEvery:
		at = (start/a.n+1)*a.n - start
	case opCorrupt:
		at = a.n - start
		if at < 0 {
			return ts
		}
	}
	ts = append(ts, trigger{at: at, armed: a})
	slices.SortStableFunc(ts, func(a, b trigger) int { return cmp.Compare(a.at, b.at) })
	return ts
}

// rangeStart returns the first offset of a Content-Range: "a-b" (the form
// distribution wants on PATCH), "bytes a-b/size" (206), or 0.
func rangeStart(cr string) int64 {
	cr = strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
	first, _, ok := strings.Cut(cr, "-")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// exchange is one request going through the middleware. It is the
// http.ResponseWriter the registry writes to; like the body reader, it is
// used by the handler's goroutine only.
type exchange struct {
	reg  *Registry
	req  *http.Request
	conn *connRef
	info reqInfo
	w    http.ResponseWriter

	respActs []armed   // response body faults, placed once the status is known
	triggers []trigger // placed response body faults, sorted

	handled       bool // the handler returned normally (no panic)
	drop          bool // DropResponse: swallow the response, reset when the handler returns
	resetOnReturn bool // a request body fault cut the request: reset when the handler returns
	wroteHeader   bool
	status        int           // status the client was sent; 0 = none
	sent          int64         // response body bytes the client was sent
	trickle       int64         // bytes per second once a Trickle fired
	delay         time.Duration // Delay: slept in WriteHeader, after the registry answered
	failed        error         // once set every write fails: the response is over
	holds         []*hold
	lingering     bool // a realistic cut reset the client; the handler still runs
}

func (x *exchange) Header() http.Header { return x.w.Header() }

// Unwrap lets http.ResponseController reach net/http's writer.
func (x *exchange) Unwrap() http.ResponseWriter { return x.w }

func (x *exchange) Flush() { _ = http.NewResponseController(x.w).Flush() }

func (x *exchange) WriteHeader(code int) {
	if x.wroteHeader {
		return
	}
	if code < 200 {
		x.w.WriteHeader(code)
		return
	}
	x.wroteHeader = true
	if x.drop || x.resetOnReturn || x.failed != nil {
		if x.failed == nil {
			x.failed = errDropped
		}
		return
	}
	start := int64(0)
	if code == http.StatusPartialContent {
		start = rangeStart(x.w.Header().Get("Content-Range"))
	}
	for _, a := range x.respActs {
		x.triggers = appendTrigger(x.triggers, a, start)
	}
	if !x.reg.sleep(x.req.Context(), x.delay) {
		x.abort(errClosing)
		return
	}
	// Counted before the client can see it, so a client that got a
	// response finds it in Stats.
	x.status = code
	x.reg.stats.status(x.info.kind, code)
	x.w.WriteHeader(code)
}

func (x *exchange) Write(p []byte) (int, error) {
	if !x.wroteHeader {
		x.WriteHeader(http.StatusOK)
	}
	written := 0
	for x.failed == nil && len(p) > 0 {
		chunk := p
		if len(x.triggers) > 0 {
			t := x.triggers[0]
			if t.at <= x.sent {
				x.triggers = x.triggers[1:]
				switch t.op {
				case opTrickle:
					x.trickle = t.rate
				case opCorrupt:
					n, err := x.forward([]byte{p[0] ^ 0xff})
					written += n
					p = p[n:]
					if err != nil {
						return written, err
					}
				default:
					x.fire(t)
				}
				continue
			}
			chunk = chunk[:min(int64(len(chunk)), t.at-x.sent)]
		}
		n, err := x.forward(chunk)
		written += n
		p = p[n:]
		if err != nil {
			return written, err
		}
	}
	if x.failed != nil {
		return written, x.failed
	}
	return written, nil
}

// forward writes body bytes to the client, slowly if trickling.
func (x *exchange) forward(p []byte) (int, error) {
	if x.trickle <= 0 {
		return x.writeCounted(p)
	}
	written := 0
	for len(p) > 0 {
		n, err := x.writeCounted(p[:min(len(p), trickleSize(x.trickle))])
		written += n
		p = p[n:]
		if err != nil {
			return written, err
		}
		x.Flush()
		if !x.reg.sleep(x.req.Context(), rateDelay(n, x.trickle)) {
			x.abort(errClosing)
			return written, x.failed
		}
	}
	return written, nil
}

// writeCounted counts bytes before writing them, so a client that has read
// them finds them in Stats, and takes back what was not written. net/http
// discards the body of a response to HEAD (a registry's error JSON, or the
// whole blob a pull-through cache fetches to answer one), so it is not
// counted.
func (x *exchange) writeCounted(p []byte) (int, error) {
	if x.req.Method == http.MethodHead {
		n, err := x.w.Write(p)
		x.sent += int64(n)
		return n, err
	}
	x.reg.stats.responseBody(x.info.kind, len(p))
	n, err := x.w.Write(p)
	x.sent += int64(n)
	x.reg.stats.responseBody(x.info.kind, n-len(p))
	return n, err
}

// trickleSize sends about ten pieces a second.
func trickleSize(rate int64) int { return int(min(max(rate/10, 1), 1<<20)) }

func rateDelay(n int, rate int64) time.Duration {
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}

// fire acts on a response at a trigger's offset. Bytes sent so far are
// flushed first so "after n bytes" holds on the wire.
func (x *exchange) fire(t trigger) {
	x.Flush()
	switch t.op {
	case opResetAfter, opResetEvery:
		x.reg.stats.cut(x.info.kind)
		x.conn.drainAndReset()
		x.failed = errReset
	case opStall:
		x.hold(t.fault, x.req.Context())
		x.conn.reset()
		x.failed = errStalled
	case opTruncate:
		x.conn.closeWrite()
		x.failed = errTruncated
	}
}

// abort ends the exchange after a wait was cut short: by the registry
// closing (reset, so nothing outlives Close) or by the client leaving.
func (x *exchange) abort(err error) {
	select {
	case <-x.reg.closing:
		x.conn.reset()
	default:
	}
	x.failed = err
}

// finish runs when the handler has returned: it carries out the resets
// that had to wait for the registry to finish its work, fires faults placed
// exactly at the end of the body, and records the status.
func (x *exchange) finish() {
	if x.failed == nil && x.handled && !x.wroteHeader && !x.drop && !x.resetOnReturn {
		x.WriteHeader(http.StatusOK) // what net/http would send
	}
	if x.status == 0 {
		x.reg.stats.status(x.info.kind, 0) // before the reset the client could see
	}
	switch {
	case x.resetOnReturn || x.drop:
		x.conn.reset()
	case x.failed == nil && x.handled:
		for len(x.triggers) > 0 && x.failed == nil {
			t := x.triggers[0]
			x.triggers = x.triggers[1:]
			if t.at == x.sent && t.op != opTrickle && t.op != opCorrupt {
				x.fire(t)
			}
		}
	}
	x.reg.mu.Lock()
	for _, h := range x.holds {
		delete(x.reg.holds, h)
	}
	if x.lingering {
		x.reg.lingerDone()
	}
	x.reg.mu.Unlock()
	for _, h := range x.holds {
		close(h.done)
	}
}

// respond answers in place of the registry.
func (x *exchange) respond(a Action) {
	code := int(a.n)
	h := x.w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	if a.retryAfter != "" {
		h.Set("Retry-After", a.retryAfter)
	}
	if code == http.StatusUnauthorized && x.reg.auth != nil {
		h.Set("WWW-Authenticate", x.reg.auth.challenge(x.info.repo))
	}
	body, contentType := a.body, a.contentType
	if !a.rawBody {
		body, contentType = ociError(code, x.info.kind, a.errCode, a.errMessage), "application/json; charset=utf-8"
	}
	if len(body) > 0 {
		h.Set("Content-Type", contentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.WriteHeader(code)
	if x.req.Method != http.MethodHead {
		_, _ = x.Write(body)
	}
}

// ociError builds {"errors":[{"code":...,"message":...}]} with a code that
// fits the status unless one is given.
func ociError(status int, kind Kind, code, message string) []byte {
	if code == "" {
		switch status {
		case http.StatusUnauthorized:
			code, message = "UNAUTHORIZED", "authentication required"
		case http.StatusForbidden:
			code, message = "DENIED", "requested access to the resource is denied"
		case http.StatusNotFound:
			switch {
			case kind&(BlobGet|BlobHead) != 0:
				code, message = "BLOB_UNKNOWN", "blob unknown to registry"
			case kind&(ManifestGet|ManifestHead|ManifestPut) != 0:
				code, message = "MANIFEST_UNKNOWN", "manifest unknown"
			case kind&(UploadPatch|UploadPut|UploadStatus|UploadDelete) != 0:
				code, message = "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry"
			default:
				code, message = "NAME_UNKNOWN", "repository name not known to registry"
			}
		case http.StatusTooManyRequests:
			code, message = "TOOMANYREQUESTS", "too many requests"
		case http.StatusServiceUnavailable:
			code, message = "UNAVAILABLE", "service unavailable"
		default:
			code = "UNKNOWN"
		}
	}
	if message == "" {
		message = strings.ToLower(http.StatusText(status))
	}
	type entry struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	b, _ := json.Marshal(struct {
		Errors []entry `json:"errors"`
	}{[]entry{{code, message}}}) // cannot fail: strings only
	return b
}

// faultBody is the request body the registry reads: it counts bytes and
// carries out request-direction faults.
type faultBody struct {
	x        *exchange
	body     io.ReadCloser
	read     int64 // bytes handed to the registry
	triggers []trigger
	trickle  int64
	failed   error
	cut      *lateBytes // set once a realistic cut has reset the client
}

func (b *faultBody) Read(p []byte) (int, error) {
	if b.cut != nil {
		return b.readLate(p)
	}
	corrupt := false
	for b.failed == nil && len(b.triggers) > 0 && b.triggers[0].at <= b.read && !corrupt {
		t := b.triggers[0]
		switch t.op {
		case opTrickle:
			b.trickle = t.rate
			b.triggers = b.triggers[1:]
		case opCorrupt:
			corrupt = true // popped once the byte is read
		case opStall:
			b.x.hold(t.fault, nil)
			b.fail(errStalled)
		default: // reset
			b.x.reg.stats.cut(b.x.info.kind)
			if b.x.reg.cfg.realistic {
				b.cutRealistically()
				return b.readLate(p)
			}
			b.fail(errReset)
		}
	}
	if b.failed != nil {
		return 0, b.failed
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch {
	case corrupt:
		p = p[:1]
	case len(b.triggers) > 0:
		p = p[:min(int64(len(p)), b.triggers[0].at-b.read)]
	}
	if b.trickle > 0 {
		p = p[:min(len(p), trickleSize(b.trickle))]
	}
	n, err := b.body.Read(p)
	if corrupt && n > 0 {
		p[0] ^= 0xff
		b.triggers = b.triggers[1:]
	}
	b.read += int64(n)
	b.x.reg.stats.requestBody(b.x.info.kind, n)
	if b.trickle > 0 && !b.x.reg.sleep(context.Background(), rateDelay(n, b.trickle)) {
		b.fail(errClosing)
		return n, b.failed
	}
	// A reset or stall due right at the end of the body must still happen:
	// hold the EOF back so the next Read fires it.
	if err == io.EOF && len(b.triggers) > 0 && b.triggers[0].at <= b.read {
		switch b.triggers[0].op {
		case opResetAfter, opResetEvery, opStall:
			if n > 0 {
				return n, nil
			}
			return b.Read(p)
		}
	}
	return n, err
}

func (b *faultBody) Close() error { return b.body.Close() }

// fail breaks the request body. The registry's handler gets the error and
// returns; finish then resets the connection, so the client learns of the
// fault only after the registry has stored what it read.
func (b *faultBody) fail(err error) {
	b.failed = err
	b.x.resetOnReturn = true
}

// hold is a stalled connection waiting to be released.
type hold struct {
	fault   *Fault
	upload  string
	release chan struct{}
	once    sync.Once
	done    chan struct{} // closed when the stalled request's handler has returned
}

func (h *hold) free() { h.once.Do(func() { close(h.release) }) }

// hold blocks until the stall is released, the registry closes or, for a
// response (ctx != nil), the client goes away.
func (x *exchange) hold(f *Fault, ctx context.Context) {
	h := &hold{fault: f, upload: x.info.upload, release: make(chan struct{}), done: make(chan struct{})}
	x.reg.mu.Lock()
	if x.reg.closed {
		x.reg.mu.Unlock()
		return
	}
	x.reg.holds[h] = struct{}{}
	x.reg.mu.Unlock()
	x.holds = append(x.holds, h)
	var gone <-chan struct{}
	if ctx != nil {
		gone = ctx.Done()
	}
	select {
	case <-h.release:
	case <-x.reg.closing:
	case <-gone:
	}
}

// releaseUpload releases stalls on an upload session and waits for their
// handlers to return, so the request that follows sees every byte they read.
func (r *Registry) releaseUpload(id string) {
	r.mu.Lock()
	var hs []*hold
	for h := range r.holds {
		if h.upload == id {
			h.free()
			hs = append(hs, h)
		}
	}
	r.mu.Unlock()
	for _, h := range hs {
		select {
		case <-h.done:
		case <-r.closing:
		case <-time.After(10 * time.Second):
		}
	}
}

package registrytest

import (
	"context"
	"errors"
	"io"
	"time"
)

// Defaults of WithRealisticCuts.
const (
	// DefaultInFlight is about what a loopback or LAN connection holds in
	// socket buffers between a client's write and the registry's read.
	DefaultInFlight = 256 << 10
	// DefaultCutLag is how long the registry's handler goes on after the
	// client saw the reset: long enough that a status query sent at once
	// lands inside it, short enough to cost little per cut.
	DefaultCutLag = 100 * time.Millisecond
)

// snapshotWindow bounds how long a realistic cut waits for bytes the
// client has written but the registry has not read yet: those already in
// the registry's socket buffers arrive at once, and a client on a capped
// link has little in flight.
const snapshotWindow = 10 * time.Millisecond

// WithRealisticCuts makes ResetAfter and ResetEvery on a request body
// (upload PATCH, PUT, POST) cut the way a dropped link or a reset by a
// proxy does, instead of the default where the client is reset only after
// the registry has stored the bytes it read.
//
// At the cut point the registry takes the body bytes that have already
// reached it -- up to inFlight bytes, what the client wrote into the
// connection and the registry had not read yet -- and resets the client
// at once. The registry's handler then goes on: lag after the cut it is
// handed those in-flight bytes and then sees its body fail (or end, if the
// whole body had arrived). So for lag after the client saw the reset:
//
//   - an upload status query reports a stale offset (the bytes before the
//     cut at most; distribution may still buffer the last few KiB);
//   - on GGCR, whose one lock the handler still holds, every other upload
//     request with a body waits, and a PATCH from the offset the client
//     believes gets 416 once it runs: the registry kept more;
//   - on Distribution a PATCH from the stale offset is accepted, and the
//     late bytes are written at the same offsets (the same blob bytes).
//
// Afterwards the registry holds the cut offset plus the in-flight bytes,
// which KindStats.LateBodyBytes counts; SettleCuts waits for that.
// inFlight <= 0 means DefaultInFlight, lag <= 0 DefaultCutLag. Faults
// placed past the cut (a Corrupt, another reset) do not act on the
// in-flight bytes. Response bodies are unaffected: a response reset already
// lands as on a real network, after the client has read the bytes.
func WithRealisticCuts(inFlight int64, lag time.Duration) Option {
	return func(c *config) {
		c.realistic, c.inFlight, c.cutLag = true, inFlight, lag
		if c.inFlight <= 0 {
			c.inFlight = DefaultInFlight
		}
		if c.cutLag <= 0 {
			c.cutLag = DefaultCutLag
		}
	}
}

// lateBytes are a cut request's in-flight bytes, due to its handler at a
// time after the client was reset.
type lateBytes struct {
	data []byte
	due  time.Time
	end  error // what follows them: errReset, or io.EOF if the body had all arrived
}

// cutRealistically takes the in-flight bytes and resets the client now.
func (b *faultBody) cutRealistically() {
	x, reg := b.x, b.x.reg
	room := reg.cfg.inFlight
	if cl := x.req.ContentLength; cl > 0 {
		room = min(room, max(cl-b.read, 0))
	}
	buf := make([]byte, room)
	got := 0
	end := errReset
	if w := x.conn.wire; w != nil {
		// A deadline, not a byte count: the kernel's count (SIOCINQ)
		// would miss what net/http and TLS have buffered already.
		_ = w.tcp.SetReadDeadline(time.Now().Add(snapshotWindow))
	}
	for got < len(buf) {
		n, err := b.body.Read(buf[got:])
		got += n
		if errors.Is(err, io.EOF) {
			end = io.EOF
		}
		if err != nil {
			break
		}
	}
	if got == len(buf) && end != io.EOF && x.req.ContentLength > 0 && b.read+int64(got) == x.req.ContentLength {
		end = io.EOF // the body is complete; its EOF needs one more read
	}
	// Counted before the client can see the reset, so that SettleCuts
	// called once it has waits for this handler.
	reg.mu.Lock()
	x.lingering = true
	reg.lingering++
	if reg.lingering == 1 {
		reg.settled = make(chan struct{})
	}
	reg.mu.Unlock()
	x.resetOnReturn = true
	b.cut = &lateBytes{data: buf[:got], due: time.Now().Add(reg.cfg.cutLag), end: end}
	x.conn.reset()
}

// readLate hands the handler its in-flight bytes once they are due, then
// the end of the body.
func (b *faultBody) readLate(p []byte) (int, error) {
	c := b.cut
	if wait := time.Until(c.due); wait > 0 && !b.x.reg.sleep(context.Background(), wait) {
		b.failed = errClosing
		c.data, c.end = nil, errClosing
	}
	if len(c.data) == 0 {
		return 0, c.end
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	b.read += int64(n)
	b.x.reg.stats.requestBody(b.x.info.kind, n)
	b.x.reg.stats.lateBody(b.x.info.kind, n)
	return n, nil
}

// lingerDone is called with r.mu held when a cut request's handler returns.
func (r *Registry) lingerDone() {
	r.lingering--
	if r.lingering == 0 {
		close(r.settled)
	}
}

// SettleCuts waits until every handler whose client a realistic cut has
// reset has returned, so the registry holds every byte it will keep from
// them (see WithRealisticCuts). It returns at once without realistic cuts.
func (r *Registry) SettleCuts(ctx context.Context) error {
	r.mu.Lock()
	settled := r.settled
	r.mu.Unlock()
	select {
	case <-settled:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closing:
		return errClosing
	}
}

package registrytest

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// wireListener hands the server wireConns, so that faults can reach the TCP
// socket under net/http (and under TLS) and bytes are counted on the wire.
type wireListener struct {
	net.Listener
	reg *Registry
}

func (l *wireListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok { // cannot happen with a "tcp" listener; serve it without wire faults
		return c, nil
	}
	return &wireConn{Conn: tcp, tcp: tcp, reg: l.reg}, nil
}

// wireConn counts and paces the bytes of one TCP connection. It embeds the
// net.Conn interface, not *net.TCPConn, so that TCPConn's ReadFrom and
// WriteTo (sendfile, splice) cannot move bytes behind the counters' back.
type wireConn struct {
	net.Conn
	tcp       *net.TCPConn
	reg       *Registry
	readPace  pacer
	writePace pacer
	resetOnce sync.Once
}

// CloseWrite lets net/http and truncation half-close the connection.
func (c *wireConn) CloseWrite() error { return c.tcp.CloseWrite() }

func (c *wireConn) Read(p []byte) (int, error) {
	rate := c.reg.capUp.Load()
	if rate > 0 && len(p) > pieceSize(rate) {
		p = p[:pieceSize(rate)]
	}
	n, err := c.Conn.Read(p)
	c.reg.wireUp.Add(int64(n))
	if n > 0 && rate > 0 && !c.readPace.wait(c.reg, n, rate) && err == nil {
		err = net.ErrClosed
	}
	return n, err
}

func (c *wireConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		rate := c.reg.capDown.Load()
		if rate > 0 {
			if len(chunk) > pieceSize(rate) {
				chunk = chunk[:pieceSize(rate)]
			}
			if !c.writePace.wait(c.reg, len(chunk), rate) {
				return written, net.ErrClosed
			}
		}
		// Counted first, so a client that has read the bytes finds them.
		c.reg.wireDown.Add(int64(len(chunk)))
		n, err := c.Conn.Write(chunk)
		c.reg.wireDown.Add(int64(n - len(chunk)))
		written += n
		p = p[n:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// reset aborts the connection with a TCP RST: SO_LINGER 0, then close. The
// kernel discards whatever is still queued, so callers that promise "N bytes
// then reset" drain the send queue first.
func (c *wireConn) reset() {
	c.resetOnce.Do(func() {
		_ = c.tcp.SetLinger(0)
		_ = c.tcp.Close()
	})
}

// drain waits until the kernel has sent (and the peer acknowledged) every
// byte written so far, so that a reset that follows does not discard bytes
// the caller counts as delivered. It gives up after timeout, for a peer that
// stopped reading.
func (c *wireConn) drain(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, ok := unsentBytes(c.tcp)
		if !ok || n == 0 {
			return
		}
		if !c.reg.sleep(context.Background(), time.Millisecond) {
			return
		}
	}
}

// pieceSize is how many bytes move at once under a rate cap: a twentieth of
// a second's worth, so the rate is smooth at the scale tests measure.
func pieceSize(rate int64) int {
	return int(min(max(rate/20, 1), 64<<10))
}

// pacer spreads bytes over time at a given rate. It keeps no credit across
// idle periods, so a connection cannot burst after a pause; but it does
// keep up to pacerSlack of lateness, because every sleep overshoots a
// little (timer granularity, scheduling), and forgetting each overshoot
// held a 64 MiB/s cap to about 28 MiB/s.
type pacer struct {
	mu   sync.Mutex
	next time.Time
}

const pacerSlack = 50 * time.Millisecond

// wait accounts n bytes at rate bytes/s and sleeps until they are due. It
// reports false if the registry closed meanwhile.
func (p *pacer) wait(reg *Registry, n int, rate int64) bool {
	return reg.sleep(context.Background(), p.delay(n, rate, time.Now()))
}

// delay accounts n bytes at rate bytes/s and returns how long to wait,
// from now, until they are due.
func (p *pacer) delay(n int, rate int64, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.next) > pacerSlack {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
	return p.next.Sub(now)
}

// connRef is what ConnContext stores for handlers: the connection net/http
// reads and writes (a *tls.Conn with TLS) and the TCP socket under it.
type connRef struct {
	top  net.Conn
	wire *wireConn
}

type connKey struct{}

func withConn(ctx context.Context, c net.Conn) context.Context {
	ref := &connRef{top: c}
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	ref.wire, _ = raw.(*wireConn)
	return context.WithValue(ctx, connKey{}, ref)
}

func connFrom(ctx context.Context) *connRef {
	ref, _ := ctx.Value(connKey{}).(*connRef)
	if ref == nil {
		return &connRef{}
	}
	return ref
}

// reset sends a TCP RST, if the connection is one of ours.
func (c *connRef) reset() {
	if c.wire != nil {
		c.wire.reset()
	}
}

// drainAndReset resets after the bytes already written have left.
func (c *connRef) drainAndReset() {
	if c.wire != nil {
		c.wire.drain(time.Second)
		c.wire.reset()
	}
}

// closeWrite ends the byte stream cleanly, the way a server that stops
// early does: a FIN on plain TCP, a close_notify alert with TLS.
func (c *connRef) closeWrite() {
	if cw, ok := c.top.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

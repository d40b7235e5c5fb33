package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/semaphore"

	"github.com/sturdyoci/sturdy/internal/httpblob"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// pullConfig is what one Copy (or one Wrap) shares between the blobs it
// fetches over several connections: the caps, and the buffers.
type pullConfig struct {
	opts      Options // Observer already folds in the Logger
	wd        watchdogConfig
	conns     int   // per blob
	rangeSize int64 // bytes per ranged GET
	// adaptive (PullConnections left at 0): a blob's first ranges come
	// over one connection, and the rest over several only if the reader
	// waited on that connection for at least half the time.
	adaptive bool
	// tokens bounds the ranged GETs in flight across the copy; buffers
	// bounds the ranges held in memory across the copy (twice as many:
	// those fetched ahead of what the destinations read).
	tokens  *semaphore.Weighted
	buffers *semaphore.Weighted
	// free keeps range buffers for reuse, as many as the budget: the
	// copy's memory is what it needed at its peak, not what the garbage
	// collector has yet to find (a sync.Pool loses buffers to other
	// cores and to every GC, and a fast copy allocates anew).
	free chan []byte
}

// newPullConfig returns nil when blobs are fetched over one connection.
func newPullConfig(opts Options) *pullConfig {
	conns := opts.PullConnections
	if conns == 0 {
		conns = DefaultPullConnections
	}
	if conns <= 1 {
		return nil
	}
	total := opts.MaxPullConnections
	if total <= 0 {
		total = DefaultMaxPullConnections
	}
	size := opts.PullRangeSize
	if size <= 0 {
		size = DefaultPullRangeSize
	}
	return &pullConfig{
		opts:      opts,
		wd:        opts.watchdogConfig(),
		conns:     min(conns, total),
		adaptive:  opts.PullConnections == 0,
		rangeSize: size,
		tokens:    semaphore.NewWeighted(int64(total)),
		buffers:   semaphore.NewWeighted(int64(2 * total)),
		free:      make(chan []byte, 2*total),
	}
}

// worth says whether n bytes are worth splitting: at least two ranges.
func (c *pullConfig) worth(n int64) bool { return c != nil && n >= 2*c.rangeSize }

func (c *pullConfig) getBuf(n int64) []byte {
	select {
	case b := <-c.free:
		return b[:n]
	default:
		return make([]byte, n, c.rangeSize)
	}
}

func (c *pullConfig) putBuf(b []byte) {
	if int64(cap(b)) != c.rangeSize {
		return
	}
	select {
	case c.free <- b:
	default:
	}
}

// keepStep: a range being fetched hands what it received to the blob's
// state (Options.StateDir) every keepStep bytes.
const keepStep = 1 << 20

// errNotParallel ends a parallel read whose later range the server did not
// serve as asked (200, 416, a wrong Content-Range), after the first one it
// did: the blob goes on over one connection.
var errNotParallel = errors.New("server stopped serving byte ranges")

// parallelBody reads bytes [start, end) of a blob as concurrent ranged
// GETs and hands them out in order. Each range is fetched by one worker
// under its own retry loop and watchdog, continuing from its own last byte
// after a failure; the blob fails when a range has used its attempts. At
// most window ranges are held, fetched or fetching, ahead of the reader:
// a slow first range holds the others back rather than letting them
// buffer the blob.
//
// It watches and counts its own connections (the healing reader around it
// hashes, reports progress, and does not watch it again). Read is for one
// goroutine; Close may come from another.
type parallelBody struct {
	src       *rangedSource
	cfg       *pullConfig
	desc      ocispec.Descriptor
	openRange rangeOpener
	ev        *blobEvents
	end       int64
	// state, if not nil, keeps each range fetched whole (and, when the
	// read ends early, what its unfinished ranges received) at its offset,
	// for a later process.
	state *pullState
	// measure, if not nil, is what decided to split this blob.
	measure *linkMeasure

	ctx      context.Context
	cancel   context.CancelCauseFunc
	stopWake func() bool
	wg       sync.WaitGroup
	window   chan struct{} // a slot per range held
	limit    atomic.Int32  // workers allowed; halved when the server pushes back

	mu   sync.Mutex
	cond *sync.Cond
	ring []*pullRange // range i in ring[i % window]
	next int64        // where the next range to hand out starts
	seq  int          // its index
	err  error        // the first failure; ends every Read
	held int          // ranges taken and not released
	// finished counts the ranges fetched; finishedAtCut is its value at
	// the last halving of limit, if backedOff.
	finished, finishedAtCut int
	backedOff               bool
	// draining: no more ranges are taken; once the reader has read those
	// taken, the blob goes on over one connection (Read returns
	// reopenNow). Set when the split did not beat one connection.
	draining bool

	// oneRate, if not 0, is one connection's measured rate (bytes per
	// second): once the reader has read conns ranges, the split must have
	// delivered splitGain times that, or it drains. The read began at
	// offset from, at started.
	oneRate float64
	from    int64
	started time.Time

	// The reader's side.
	head int        // index of the range being read
	cur  *pullRange // nil between ranges
	pos  int
}

type pullRange struct {
	idx        int
	start, end int64
	buf        []byte
	n          int64 // bytes in buf, written by the worker only
	kept       int64 // of them, handed to the blob's state (worker only)
	done       bool  // guarded by parallelBody.mu
	released   bool  // guarded by parallelBody.mu
	exempt     bool  // outside the copy-wide budget (the blob held no other range)
}

func (c *pullRange) rng() progress.Range { return progress.Range{Start: c.start, End: c.end} }

// openParallel starts reading [offset, end) over several connections. The
// first range is asked for here, under the caller's watch, so that a blob
// that is not there, or a server that does not serve ranges, is known at
// once: a 200 hands back the whole body, to be read over one connection.
func (s *rangedSource) openParallel(ctx context.Context, desc ocispec.Descriptor, offset, end int64, ev *blobEvents, state *pullState) (io.ReadCloser, int64, error) {
	cfg := s.par
	b := &parallelBody{src: s, cfg: cfg, desc: desc, openRange: s.openRange, ev: ev, state: state, end: end, next: offset,
		window: make(chan struct{}, 2*cfg.conns)}
	b.cond = sync.NewCond(&b.mu)
	b.from, b.started = offset, time.Now()
	if v, ok := s.measured.Load(desc.Digest); ok {
		b.measure = v.(*linkMeasure)
		b.oneRate = b.measure.checkSplit()
	}
	b.ring = make([]*pullRange, cap(b.window))
	b.limit.Store(int32(cfg.conns))
	b.ctx, b.cancel = context.WithCancelCause(ctx)
	b.stopWake = context.AfterFunc(b.ctx, func() {
		b.mu.Lock()
		if b.err == nil {
			b.err = context.Cause(b.ctx)
		}
		b.cond.Broadcast()
		b.mu.Unlock()
	})

	first := b.take()
	if first == nil {
		b.Close()
		return nil, 0, context.Cause(ctx)
	}
	if err := cfg.tokens.Acquire(b.ctx, 1); err != nil {
		b.Close()
		return nil, 0, context.Cause(ctx)
	}
	rc, err := b.probe(ctx, first)
	if err != nil {
		cfg.tokens.Release(1)
		b.Close()
		switch {
		case errors.Is(err, httpblob.ErrRangeIgnored):
			// The whole blob is in rc: read it over this one connection.
			s.single.Store(desc.Digest, struct{}{})
			if offset > 0 {
				s.rangeIgnored.Store(desc.Digest, struct{}{})
			}
			ev.note("registry ignores Range; fetching this blob over one connection")
			return rc, offset, nil
		case errors.Is(err, httpblob.ErrRangeRefused), errors.Is(err, httpblob.ErrBadContentRange):
			s.single.Store(desc.Digest, struct{}{})
			return s.openSingle(ctx, desc, offset, end, ev)
		}
		return nil, 0, err
	}
	ev.note(fmt.Sprintf("fetching in ranges of %s over up to %d connections", progress.FormatBytes(cfg.rangeSize), cfg.conns))
	n := min(cfg.conns, int((end-offset+cfg.rangeSize-1)/cfg.rangeSize))
	b.wg.Add(n)
	go b.work(0, first, rc)
	for id := 1; id < n; id++ {
		go b.work(id, nil, nil)
	}
	return b, 0, nil
}

// probe asks for the first range under a watchdog of its own (the wait
// for a slot and a connection is not the server's), and under ctx rather
// than the read's: a 200 hands back a body that outlives b.
func (b *parallelBody) probe(ctx context.Context, c *pullRange) (io.ReadCloser, error) {
	pctx, cancel := context.WithCancelCause(ctx)
	stop := watch(b.cfg.wd, new(atomic.Int64), wallClock(), cancel)
	rc, err := b.openRange(pctx, b.desc, c.start, c.end, b.ev)
	stop()
	if err != nil && !errors.Is(err, httpblob.ErrRangeIgnored) {
		if cause := context.Cause(pctx); cause != nil && ctx.Err() == nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", cause, err) // the watchdog's ErrStalled
		}
		cancel(nil)
		return nil, err
	}
	return cancelOnClose{rc, cancel}, err
}

// cancelOnClose releases a request's context with its body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}

// take reserves the next range: a window slot and a copy-wide buffer,
// waiting for both. It returns nil when nothing is left or the read ended.
func (b *parallelBody) take() *pullRange {
	select {
	case b.window <- struct{}{}:
	case <-b.ctx.Done():
		return nil
	}
	// A blob that holds no range takes one outside the copy-wide budget:
	// readers that stopped reading (a Wrap'd Fetch left open) may hold
	// all of it, and every blob must still move.
	b.mu.Lock()
	exempt := b.held == 0
	b.held++
	b.mu.Unlock()
	if !exempt && b.cfg.buffers.Acquire(b.ctx, 1) != nil {
		b.mu.Lock()
		b.held--
		b.mu.Unlock()
		<-b.window
		return nil
	}
	b.mu.Lock()
	if b.next >= b.end || b.err != nil || b.draining {
		b.held--
		b.mu.Unlock()
		if !exempt {
			b.cfg.buffers.Release(1)
		}
		<-b.window
		return nil
	}
	c := &pullRange{idx: b.seq, start: b.next, end: min(b.next+b.cfg.rangeSize, b.end), exempt: exempt}
	b.next, b.seq = c.end, b.seq+1
	b.ring[c.idx%len(b.ring)] = c
	b.mu.Unlock()
	c.buf = b.cfg.getBuf(c.end - c.start)
	return c
}

// work fetches ranges until none is left, the read ends, or the server's
// push-back leaves no room for this worker. The first worker starts with
// the range and connection openParallel opened.
func (b *parallelBody) work(id int, c *pullRange, rc io.ReadCloser) {
	defer b.wg.Done()
	for {
		if c == nil {
			if int32(id) >= b.limit.Load() {
				return
			}
			if c = b.take(); c == nil {
				return
			}
		}
		err := b.fetch(c, rc)
		if err == nil && b.state != nil {
			// Before done: the reader may hand buf back once it is.
			b.state.keep(c.buf[c.kept:], c.start+c.kept)
			c.kept = c.n
		}
		b.mu.Lock()
		if err != nil {
			if b.err == nil {
				b.err = err
			}
			b.cond.Broadcast()
			b.mu.Unlock()
			b.cancel(err)
			return
		}
		c.done = true
		b.finished++
		b.cond.Broadcast()
		b.mu.Unlock()
		c, rc = nil, nil
	}
}

// fetch fills c, continuing from its own last byte after a failure, under
// its own retry loop. rc, if not nil, is a connection already open at
// c.start (holding a token).
func (b *parallelBody) fetch(c *pullRange, rc io.ReadCloser) error {
	ret, err := retrypolicy.NewRetrier(b.rangePolicy(c), c.end-c.start)
	if err != nil {
		if rc != nil {
			rc.Close()
			b.cfg.tokens.Release(1)
		}
		return &readerError{err}
	}
	for {
		if rc == nil {
			if err := b.cfg.tokens.Acquire(b.ctx, 1); err != nil {
				return context.Cause(b.ctx)
			}
		}
		actx, cancel := ret.Begin(b.ctx, c.n)
		if ret.Attempts() > 1 && c.n > 0 {
			b.ev.rangeResumed(c.rng(), c.start+c.n, ret.Attempts())
		}
		var moved atomic.Int64
		stop := watch(b.cfg.wd, &moved, wallClock(), ret.Cancel)
		if rc == nil {
			rc, err = b.openRange(alreadyWatched(actx), b.desc, c.start+c.n, c.end, b.ev)
		}
		if err == nil {
			// The first connection was opened before this attempt began:
			// its end must end the read too.
			body := rc
			unbind := context.AfterFunc(actx, func() { body.Close() })
			err = b.fill(c, rc, &moved)
			unbind()
		}
		stop()
		if rc != nil {
			rc.Close()
			rc = nil
		}
		b.cfg.tokens.Release(1)
		if err == nil {
			cancel(nil)
			return nil
		}
		if errors.Is(err, httpblob.ErrRangeIgnored) || errors.Is(err, httpblob.ErrRangeRefused) || errors.Is(err, httpblob.ErrBadContentRange) {
			cancel(nil)
			// The healing reader goes on over one connection, at once.
			b.src.single.Store(b.desc.Digest, struct{}{})
			b.ev.note("registry stopped serving byte ranges; fetching this blob over one connection")
			return &reopenNow{fmt.Errorf("%s: %w: %w", c.rng(), errNotParallel, err)}
		}
		if pushedBack(err) {
			b.fewerConnections()
		}
		rerr := ret.Retry(b.ctx, err, c.n)
		cancel(nil)
		if rerr != nil {
			if b.ctx.Err() != nil {
				return rerr
			}
			// The range used its attempts: the blob fails, and says where.
			var pe *retrypolicy.Error
			if errors.As(rerr, &pe) {
				pe.Err = fmt.Errorf("%s: %w", c.rng(), pe.Err)
			}
			return &readerError{rerr}
		}
	}
}

// fill reads rc into c until c is full.
func (b *parallelBody) fill(c *pullRange, rc io.Reader, moved *atomic.Int64) error {
	for c.n < int64(len(c.buf)) {
		n, err := rc.Read(c.buf[c.n:])
		c.n += int64(n)
		moved.Add(int64(n))
		b.ev.onWire(int64(n))
		if b.state != nil && c.n-c.kept >= keepStep && c.n < int64(len(c.buf)) {
			// A process killed mid-range keeps what it received.
			b.state.keep(c.buf[c.kept:c.n], c.start+c.kept)
			c.kept = c.n
		}
		if c.n == int64(len(c.buf)) {
			return nil
		}
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fewerConnections halves the workers allowed for this blob after a 429 or
// 503: a registry that rate-limits gets fewer connections, not only a
// later request. It never goes below one. The answers to one burst of
// requests count once: another halving waits until a range has finished
// since the last one.
func (b *parallelBody) fewerConnections() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.backedOff && b.finished == b.finishedAtCut {
		return
	}
	first := !b.backedOff
	b.backedOff, b.finishedAtCut = true, b.finished
	b.limit.Store(max(b.limit.Load()/2, 1))
	if first {
		b.ev.note("registry pushed back on extra connections; fetching this blob over fewer")
	}
}

// pushedBack reports a 429 or 503, or any answer that asked to wait.
func pushedBack(err error) bool {
	if _, ok := retrypolicy.RetryAfter(err); ok {
		return true
	}
	var se *retrypolicy.StatusError
	return errors.As(err, &se) && (se.StatusCode == 429 || se.StatusCode == 503)
}

// rangePolicy is the blob's retry policy for one range: its retries are
// reported with the range, at absolute offsets, and do not count as the
// blob's attempts.
func (b *parallelBody) rangePolicy(c *pullRange) retrypolicy.Config {
	cfg := b.cfg.opts.Retry
	user := cfg.OnRetry
	cfg.OnRetry = func(ri retrypolicy.RetryInfo) {
		ri.Err = redacted(ri.Err)
		ri.Op = opFetch
		ri.Desc = b.desc
		ri.Offset += c.start
		b.ev.retrying(ri, c.rng())
		if user != nil {
			user(ri)
		}
	}
	return cfg
}

// Read hands out the ranges in order, waiting for the next one to be
// complete.
func (b *parallelBody) Read(p []byte) (int, error) {
	for {
		if b.cur == nil {
			b.mu.Lock()
			for {
				if b.err != nil {
					err := b.err
					b.mu.Unlock()
					return 0, err
				}
				if c := b.ring[b.head%len(b.ring)]; c != nil && c.idx == b.head && c.done {
					b.cur, b.pos = c, 0
					break
				}
				if b.next >= b.end && b.seq == b.head {
					b.mu.Unlock()
					return 0, io.EOF
				}
				if b.draining && b.seq == b.head {
					b.mu.Unlock()
					return 0, &reopenNow{errNoGain}
				}
				b.cond.Wait()
			}
			b.mu.Unlock()
		}
		if b.pos < len(b.cur.buf) {
			n := copy(p, b.cur.buf[b.pos:])
			b.pos += n
			return n, nil
		}
		b.mu.Lock()
		b.release(b.cur, true)
		b.mu.Unlock()
		handed := b.cur.end - b.from
		b.cur = nil
		b.head++
		b.checkGain(handed)
	}
}

// splitGain is how many times one connection's measured rate a split read
// must deliver, by the time its reader has read a range per connection,
// to go on: a client that shares its cores with the server, or a server
// that was slow while one connection was measured, can make a fast link
// look like the limit, and then the buffers only add copies.
const splitGain = 1.25

// errNoGain ends a split read that did not beat one connection.
var errNoGain = errors.New("more connections did not move this blob faster")

// checkGain drains the read when, after a range per connection, the
// handed bytes have not come at splitGain times one connection's measured
// rate. Only the reader calls it.
func (b *parallelBody) checkGain(handed int64) {
	if b.oneRate <= 0 || b.head < b.cfg.conns {
		return
	}
	one := b.oneRate
	b.oneRate = 0
	rate := float64(handed) / max(time.Since(b.started).Seconds(), 1e-9)
	if rate >= splitGain*one {
		return
	}
	if b.measure != nil {
		b.measure.revert()
	}
	b.mu.Lock()
	b.draining = true
	b.mu.Unlock()
	b.ev.note(fmt.Sprintf("%d connections moved %s/s, one moved %s/s: going on over one connection",
		b.limit.Load(), progress.FormatBytes(int64(rate)), progress.FormatBytes(int64(one))))
}

// release gives back c's window slot and copy-wide buffer, and its memory
// to the pool if reuse (not when Close may race a Read of it). b.mu is held.
func (b *parallelBody) release(c *pullRange, reuse bool) {
	if c.released {
		return
	}
	c.released = true
	if b.ring[c.idx%len(b.ring)] == c {
		b.ring[c.idx%len(b.ring)] = nil
	}
	if reuse {
		b.cfg.putBuf(c.buf)
	}
	if !c.exempt {
		b.cfg.buffers.Release(1)
	}
	b.held--
	<-b.window
}

// Close ends every connection at once and waits for the workers, so that
// nothing outlives the read.
func (b *parallelBody) Close() error {
	b.cancel(errReaderClosed)
	b.wg.Wait()
	b.stopWake()
	b.mu.Lock()
	for _, c := range b.ring {
		if c != nil {
			if !c.done && c.n > c.kept && b.state != nil {
				// The rest of what an unfinished range received (no
				// worker writes c any more).
				b.state.keep(c.buf[c.kept:c.n], c.start+c.kept)
			}
			b.release(c, false)
		}
	}
	b.mu.Unlock()
	return nil
}

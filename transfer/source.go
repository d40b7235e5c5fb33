package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sturdyoci/sturdy/internal/httpblob"
	"github.com/sturdyoci/sturdy/internal/statedir"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// source opens a blob's content at an offset. It returns a reader and how
// many leading bytes of it the caller must drop to reach offset (when the
// source cannot seek or range).
//
// end is where the reader will stop (desc.Size but for a chunk of an
// upload): a source that reads ahead does not read past it. ev, if not
// nil, takes the events of a source that reports on its own connections;
// state, if not nil, keeps for a later process what a read over several
// connections fetched out of order (a single stream's bytes are kept by
// its reader as they pass).
type source interface {
	open(ctx context.Context, desc ocispec.Descriptor, offset, end int64, ev *blobEvents, state *pullState) (rc io.ReadCloser, skip int64, err error)
	// network reports whether reads cross a network, so that bytes read
	// again count as wire bytes.
	network() bool
	// parallel reports whether open(ctx, desc, offset, end, ev) reads
	// over several connections, watching each itself.
	parallel(desc ocispec.Descriptor, offset, end int64, ev *blobEvents) bool
}

// newSource reads s. Blobs from a registry or a URLSource are fetched over
// several connections as opts say.
// With Options.Mirrors, every source is read through a chain of the
// mirrors and then s.
func newSource(s content.Fetcher, opts Options) source {
	if len(opts.Mirrors) > 0 {
		c := newSourceChain(s, opts)
		return &rangedSource{openRange: c.openRange, fetcher: chainFetcher{c}, chain: c, par: newPullConfig(opts)}
	}
	switch t := unwrapTarget(s).(type) {
	case *remote.Repository:
		return &rangedSource{openRange: withoutEvents(httpblob.FromRepository(t).OpenRange), fetcher: t, par: newPullConfig(opts)}
	case *URLSource:
		return &rangedSource{openRange: withoutEvents(t.openRange), fetcher: t, par: newPullConfig(opts)}
	}
	return fetcherSource{s}
}

// rangeOpener opens bytes [start, end) of desc, with the errors and body
// of httpblob.OpenRange; ev, if not nil, takes the events of a chain of
// sources.
type rangeOpener func(ctx context.Context, desc ocispec.Descriptor, start, end int64, ev *blobEvents) (io.ReadCloser, error)

func withoutEvents(f func(ctx context.Context, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error)) rangeOpener {
	return func(ctx context.Context, desc ocispec.Descriptor, start, end int64, _ *blobEvents) (io.ReadCloser, error) {
		return f(ctx, desc, start, end)
	}
}

// chainFetcher fetches manifests through a chain.
type chainFetcher struct{ c *sourceChain }

func (f chainFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return f.c.fetch(ctx, desc)
}

// suspect tells a source that desc's bytes did not verify: a chain sets
// aside the mirrors that served them.
func suspect(src source, desc ocispec.Descriptor) {
	if rs, ok := src.(*rangedSource); ok && rs.chain != nil {
		rs.chain.corrupted(desc.Digest)
	}
}

// rangedSource continues a broken download with its own ranged GET, from
// a registry or from a URLSource. oras-go's seekable reader is no help
// here: seeking to the current offset after a failed read is a no-op, and
// it always opens a full GET first.
type rangedSource struct {
	openRange rangeOpener
	fetcher   content.Fetcher // manifests, fetched whole
	par       *pullConfig     // nil: one connection per blob
	chain     *sourceChain    // nil without mirrors
	// rangeIgnored holds the digests whose ranged reads the registry
	// answered with the whole blob, refused (416) or answered with the
	// wrong bytes (a 206 whose Content-Range does not match): their later
	// reopens read from 0 and drop what is already here, rather than
	// asking again. Per blob: one CDN edge's lie must not cost the
	// siblings their resume.
	rangeIgnored sync.Map // digest.Digest -> struct{}
	// single holds the digests that go over one connection: the server
	// did not serve one of their ranges as asked.
	single sync.Map // digest.Digest -> struct{}
	// measured holds, for the digests whose first ranges are read over
	// one connection to learn what limits the pull (pullConfig.adaptive),
	// what was measured and, once decided, whether the rest goes over
	// several.
	measured sync.Map // digest.Digest -> *linkMeasure
}

// network: a chain of local stores (mirror layouts over a layout origin)
// reads none.
func (s *rangedSource) network() bool { return s.chain == nil || s.chain.network() }

func (s *rangedSource) open(ctx context.Context, desc ocispec.Descriptor, offset, end int64, ev *blobEvents, state *pullState) (io.ReadCloser, int64, error) {
	if isManifest(desc) {
		// Manifests live under /manifests/; they are small and fetched whole.
		rc, err := s.fetcher.Fetch(ctx, desc)
		return rc, offset, err
	}
	if _, ok := s.rangeIgnored.Load(desc.Digest); ok {
		rc, err := s.openRange(ctx, desc, 0, desc.Size, ev)
		return rc, offset, err
	}
	switch s.split(desc, offset, end, ev) {
	case splitRanges:
		return s.openParallel(ctx, desc, offset, end, ev, state)
	case splitMeasure:
		return s.openMeasured(ctx, desc, offset, end, ev)
	}
	return s.openSingle(ctx, desc, offset, end, ev)
}

func (s *rangedSource) parallel(desc ocispec.Descriptor, offset, end int64, ev *blobEvents) bool {
	return s.split(desc, offset, end, ev) == splitRanges
}

// How a read of a blob is split across connections.
const (
	splitNone    = iota // one connection
	splitRanges         // concurrent ranged GETs (parallelBody)
	splitMeasure        // the next range over one connection, measured
)

func (s *rangedSource) split(desc ocispec.Descriptor, offset, end int64, ev *blobEvents) int {
	if ev == nil || isManifest(desc) || !s.par.worth(end-offset) {
		return splitNone
	}
	_, ignored := s.rangeIgnored.Load(desc.Digest)
	_, single := s.single.Load(desc.Digest)
	if ignored || single {
		return splitNone
	}
	if !s.par.adaptive {
		return splitRanges
	}
	v, ok := s.measured.Load(desc.Digest)
	if !ok {
		return splitMeasure
	}
	switch decided, many := v.(*linkMeasure).outcome(); {
	case !decided:
		return splitMeasure
	case many:
		return splitRanges
	}
	return splitNone
}

// networkBound is the share of a measured range's read time the reader
// spent waiting on its connection at or above which more connections are
// worth their cost. Below it the destination (hashing, writing, another
// registry's upload) is what limits the pull, and the buffers that
// reorder ranges would only add copies: on loopback one stream beat eight
// connections by a third on two cores. A link that caps each connection
// waits over 90% of the time; a reader on loopback under 35%.
const networkBound = 0.5

// A blob is measured over one connection in requests of 1 and then 2
// ranges, until they add up to measureFor of reading or measureRanges
// ranges: on a fast link one range is over in milliseconds, and one
// scheduling hiccup would decide; but every request drains the stream for
// a round trip, and on loopback three requests of 1, 2 and 4 ranges made
// the pull 5-7% slower than one stream. A link slow enough to be worth
// splitting decides after its first range.
const (
	measureFor    = 200 * time.Millisecond
	measureRanges = 3
)

// linkMeasure adds up the measured requests of one blob.
type linkMeasure struct {
	mu            sync.Mutex
	waited, wall  time.Duration
	bytes         int64
	ranges        int
	decided, many bool
	checked       bool // a split read compared its rate with one connection's
}

// checkSplit returns one connection's measured rate (bytes per second)
// for the first split read of the blob to compare its own with, or 0.
func (m *linkMeasure) checkSplit() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.many || m.checked || m.wall <= 0 {
		return 0
	}
	m.checked = true
	return float64(m.bytes) / m.wall.Seconds()
}

// revert records that more connections did not help: the rest of the
// blob goes over one.
func (m *linkMeasure) revert() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.many = false
}

// next returns how many ranges the next measured request asks for: as
// many as were measured so far plus one (1, 2, 4, ...), up to
// measureRanges in all.
func (m *linkMeasure) next() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(min(m.ranges+1, measureRanges-m.ranges), 1)
}

func (m *linkMeasure) outcome() (decided, many bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.decided, m.many
}

// add counts one measured request of n ranges and reports whether that
// decided, and the share of the time the reader waited.
func (m *linkMeasure) add(waited, wall time.Duration, n int, bytes int64) (decidedNow bool, share float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.decided {
		return false, 0
	}
	m.waited, m.wall, m.ranges, m.bytes = m.waited+waited, m.wall+wall, m.ranges+n, m.bytes+bytes
	if m.wall < measureFor && m.ranges < measureRanges {
		return false, 0
	}
	share = float64(m.waited) / float64(max(m.wall, 1))
	m.decided, m.many = true, share >= networkBound
	return true, share
}

// openMeasured reads desc's next range over one connection and times it:
// how long the reader waited inside Read against the wall time from its
// first Read to its last byte. Added up over the measured ranges, that
// decides how the rest of the blob is read (split). The healing reader
// stops at the range's end (segmentEnd) and opens again, which is not a
// retry.
func (s *rangedSource) openMeasured(ctx context.Context, desc ocispec.Descriptor, offset, readEnd int64, ev *blobEvents) (io.ReadCloser, int64, error) {
	v, _ := s.measured.LoadOrStore(desc.Digest, &linkMeasure{})
	m := v.(*linkMeasure)
	n := m.next()
	end := min(offset+int64(n)*s.par.rangeSize, readEnd)
	rc, skip, err := s.openSingle(ctx, desc, offset, end, ev)
	if _, ignored := s.rangeIgnored.Load(desc.Digest); err != nil || ignored {
		// The whole blob came (a cold pull-through cache streams what it
		// fetches): one connection it is, to the end.
		return rc, skip, err
	}
	return &measuredBody{rc: rc, left: end - offset, end: end, done: func(waited, wall time.Duration) {
		decided, share := m.add(waited, wall, n, end-offset)
		if !decided {
			return
		}
		pct := int(share*100 + 0.5)
		if _, many := m.outcome(); many {
			ev.note(fmt.Sprintf("one connection waited on the network %d%% of the time; fetching the rest in ranges", pct))
		} else {
			ev.note(fmt.Sprintf("one connection keeps up (it waited on the network %d%% of the time); fetching the rest over it", pct))
		}
	}}, 0, nil
}

// measuredBody times the reads of one range; done is called once the
// range was read whole, with the time spent inside Read and the time from
// the first Read to the last byte.
type measuredBody struct {
	rc      io.ReadCloser
	left    int64 // bytes to the range's end
	end     int64
	first   time.Time
	reading activeClock
	done    func(waited, wall time.Duration)
	called  bool
}

func (b *measuredBody) segmentEnd() int64 { return b.end }

func (b *measuredBody) Read(p []byte) (int, error) {
	if b.first.IsZero() {
		b.first = time.Now()
	}
	b.reading.enter()
	n, err := b.rc.Read(p)
	b.reading.leave()
	b.left -= int64(n)
	if b.left <= 0 && !b.called {
		b.called = true
		b.done(b.reading.elapsed(), time.Since(b.first))
	}
	return n, err
}

func (b *measuredBody) Close() error { return b.rc.Close() }

// openSingle reads desc's bytes [offset, end) over one connection: a
// closed range to where the reader stops (a kept span, Options.StateDir,
// or the end of an upload's chunk), not the rest of the blob, which a
// server would push into the socket's buffers only to have it dropped.
func (s *rangedSource) openSingle(ctx context.Context, desc ocispec.Descriptor, offset, end int64, ev *blobEvents) (io.ReadCloser, int64, error) {
	if end <= offset || end > desc.Size {
		end = desc.Size
	}
	rc, err := s.openRange(ctx, desc, offset, end, ev)
	switch {
	case errors.Is(err, httpblob.ErrRangeIgnored):
		s.rangeIgnored.Store(desc.Digest, struct{}{})
		return rc, offset, nil
	case errors.Is(err, httpblob.ErrRangeRefused), errors.Is(err, httpblob.ErrBadContentRange):
		// Degrade, do not die: read from 0 and drop, as for a 200.
		s.rangeIgnored.Store(desc.Digest, struct{}{})
		rc, err := s.openRange(ctx, desc, 0, desc.Size, ev)
		return rc, offset, err
	}
	return rc, 0, err
}

// fetcherSource reads any content.Fetcher: local stores seek (oci.Store and
// file.Store hand out *os.File), others are read from 0 and the first
// offset bytes dropped.
type fetcherSource struct{ f content.Fetcher }

func (s fetcherSource) network() bool { return false }

func (fetcherSource) parallel(ocispec.Descriptor, int64, int64, *blobEvents) bool { return false }

func (s fetcherSource) open(ctx context.Context, desc ocispec.Descriptor, offset, _ int64, _ *blobEvents, _ *pullState) (io.ReadCloser, int64, error) {
	rc, err := s.f.Fetch(ctx, desc)
	if err != nil || offset == 0 {
		return rc, 0, err
	}
	if sk, ok := rc.(io.Seeker); ok {
		if _, err := sk.Seek(offset, io.SeekStart); err == nil {
			return rc, 0, nil
		}
	}
	return rc, offset, nil
}

// healingReader reads one blob from a source and, when a read fails with a
// retryable error, reopens the source where it broke, under the blob's
// retry policy: each reopen is an attempt with its own deadline on the
// bytes still to come, the stall watchdog watches each connection, and the
// consumer sees one unbroken stream. It checks the digest over the whole
// stream, across reopens, and returns content.ErrMismatchedDigest instead
// of io.EOF when it does not match.
type healingReader struct {
	ctx  context.Context
	desc ocispec.Descriptor
	src  source
	ret  *retrypolicy.Retrier
	wd   watchdogConfig
	ev   *blobEvents

	offset    int64
	end       int64           // where the consumer stops: what a source may read ahead to
	delivered atomic.Bool     // every byte was read: what follows is the consumer's business
	digester  digest.Digester // nil: not verified here (began mid-blob, or the destination verifies)
	resumes   int
	reopens   int // reopenNow reopens so far
	notedDrop bool

	// state, if set, keeps the bytes received; the spans of it an earlier
	// process kept (local, in order, local bytes in all) are read from it
	// instead of the source. A source read stops where the next one
	// begins (bodyEnd). hop marks an open after a kept span: not a retry.
	state   *pullState
	localSp []statedir.Span
	local   int64
	bodyEnd int64
	hop     bool

	body   io.ReadCloser
	own    bool // body watches and counts its own connections (parallelBody)
	skip   int64
	cancel context.CancelCauseFunc
	stopWD func()
	moved  *atomic.Int64 // every byte read from a body, dropped ones too
	active *activeClock  // time blocked opening or reading the source: its watchdog's clock
	busy   *activeClock  // time inside Read, backoff waits included: not its consumer's fault
	err    error         // sticky: io.EOF, or the final error
}

func newHealingReader(ctx context.Context, desc ocispec.Descriptor, src source, ret *retrypolicy.Retrier, wd watchdogConfig, ev *blobEvents, offset int64) *healingReader {
	r := &healingReader{ctx: ctx, desc: desc, src: src, ret: ret, wd: wd, ev: ev, offset: offset, end: desc.Size,
		moved: new(atomic.Int64), active: new(activeClock), busy: new(activeClock)}
	if err := httpblob.ValidateDigest(desc); err != nil {
		// Never "unverified but fine".
		r.err = &readerError{err}
	} else if offset == 0 {
		r.digester = desc.Digest.Algorithm().Digester()
	}
	return r
}

func (r *healingReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, r.err
	}
	r.busy.enter()
	defer r.busy.leave()
	for r.err == nil {
		if r.body == nil {
			if end := r.localEnd(); end > r.offset {
				if n := r.readLocal(p, end); n > 0 {
					return n, nil
				}
				continue
			}
		}
		if r.offset >= r.desc.Size && r.body == nil {
			r.finish() // every byte was kept: nothing to fetch
			continue
		}
		if r.body == nil {
			r.open()
			continue
		}
		if r.skip > 0 {
			r.drop()
			continue
		}
		remaining := r.bodyEnd - r.offset
		if remaining <= 0 {
			if r.offset >= r.desc.Size {
				r.finish()
			} else {
				// A kept span follows: read it from disk, then reopen.
				r.closeBody()
				r.hop = true
			}
			continue
		}
		if int64(len(p)) > remaining {
			p = p[:remaining]
		}
		r.active.enter()
		n, err := r.body.Read(p)
		r.active.leave()
		if n > 0 {
			r.advance(p[:n])
			if r.offset == r.desc.Size {
				r.finish()
				if r.err == io.EOF {
					return n, nil
				}
				return n, r.err
			}
		}
		switch {
		case err == io.EOF && r.offset == r.bodyEnd:
			// A closed range up to a kept span, ended with its last
			// bytes: read the span from disk, then reopen.
			r.closeBody()
			r.hop = true
		case err != nil:
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // shorter than the descriptor says
			}
			r.fail(err)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, r.err
}

// prime opens the first connection, so that a blob that is not there fails
// at once rather than on the first Read.
func (r *healingReader) prime() error {
	for r.err == nil && r.body == nil {
		r.open()
	}
	if r.err != nil && r.err != io.EOF {
		return r.err
	}
	return nil
}

// useState reads, before the source, the bytes ps kept from an earlier
// process, and keeps what the source serves.
func (r *healingReader) useState(ps *pullState) {
	r.state = ps
	r.localSp, r.local = ps.local()
}

// localEnd returns where the kept span that holds offset ends, or offset.
func (r *healingReader) localEnd() int64 {
	for _, s := range r.localSp {
		if s.Start <= r.offset && r.offset < s.End {
			return s.End
		}
	}
	return r.offset
}

// nextLocal returns where the first kept span after offset begins: where
// a source read stops.
func (r *healingReader) nextLocal() int64 {
	for _, s := range r.localSp {
		if s.Start > r.offset {
			return s.Start
		}
	}
	return r.desc.Size
}

// readLocal hands on bytes kept by an earlier process, up to end. They
// cost no wire and are not progress: the blob's Resumed already counted
// them, and one more at the end of a span beyond the prefix says where
// the blob goes on. Should the disk fail, the source serves them instead.
func (r *healingReader) readLocal(p []byte, end int64) int {
	p = p[:min(int64(len(p)), end-r.offset)]
	n, err := r.state.readAt(p, r.offset)
	if n > 0 {
		if r.digester != nil {
			r.digester.Hash().Write(p[:n])
		}
		r.offset += int64(n)
		r.moved.Add(int64(n))
		if r.offset == end && end < r.desc.Size && r.spanStart(end) > 0 {
			r.ev.reusedResumed(r.offset, r.local)
		}
	}
	if err != nil && r.offset < end {
		r.localSp = nil
		r.ev.note("cannot read the bytes kept by an earlier copy (" + err.Error() + "); fetching them again")
	}
	return n
}

// spanStart returns the start of the kept span that ends at end.
func (r *healingReader) spanStart(end int64) int64 {
	for _, s := range r.localSp {
		if s.End == end {
			return s.Start
		}
	}
	return 0
}

func (r *healingReader) advance(b []byte) {
	n := int64(len(b))
	if r.digester != nil {
		r.digester.Hash().Write(b)
	}
	if r.state != nil {
		r.state.keep(b, r.offset)
	}
	r.offset += n
	r.moved.Add(n)
	switch {
	case r.ev == nil:
	case r.own:
		r.ev.progressed(r.offset) // its connections counted the wire
	default:
		r.ev.moved(n, r.offset)
	}
}

// drop reads and discards the bytes before offset of a source that cannot
// start there. They cross the wire again; they are counted as wire bytes.
func (r *healingReader) drop() {
	buf := make([]byte, min(r.skip, 256<<10))
	for r.skip > 0 {
		r.active.enter()
		n, err := r.body.Read(buf[:min(r.skip, int64(len(buf)))])
		r.active.leave()
		r.skip -= int64(n)
		r.moved.Add(int64(n))
		if r.ev != nil && r.src.network() {
			r.ev.onWire(int64(n)) // crossed the wire, not progress
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			r.fail(err)
			return
		}
	}
}

func (r *healingReader) open() {
	hop := r.hop
	r.hop = false
	begin := r.ret.Begin
	if hop {
		begin = r.ret.Continue
	}
	actx, cancel := begin(r.ctx, r.offset)
	if r.ret.Attempts() > 1 && r.ev != nil && !hop {
		r.ev.attemptStarts(r.offset)
	}
	if r.ret.Attempts() > 1 && r.offset > 0 && !hop {
		r.resumes++
	}
	// A source read stops where a kept span begins.
	end := r.end
	r.bodyEnd = r.desc.Size
	if next := r.nextLocal(); next < r.desc.Size {
		end, r.bodyEnd = min(end, next), next
	}
	// Watched from the request on: a server that accepts the connection
	// and never answers has stalled too. A read over several connections
	// watches each of them, and its first request, itself: one watchdog
	// on the ordered stream would cut them all for one slow range, and
	// count against the server the wait for a connection the copy's cap
	// holds back.
	stop := func() {}
	parallel := r.src.parallel(r.desc, r.offset, end, r.ev)
	if !parallel {
		stop = watch(r.wd, r.moved, r.active.elapsed, r.ret.Cancel)
	}
	r.active.enter()
	body, skip, err := r.src.open(alreadyWatched(actx), r.desc, r.offset, end, r.ev, r.state)
	r.active.leave()
	if err != nil {
		stop()
		if body != nil {
			body.Close()
		}
		r.err = r.retry(err)
		cancel(nil)
		return
	}
	_, r.own = body.(*parallelBody)
	if seg, ok := body.(interface{ segmentEnd() int64 }); ok {
		// A measured range: the reader opens again at its end.
		r.bodyEnd = min(r.bodyEnd, seg.segmentEnd())
	}
	if parallel && !r.own {
		// It fell back to one connection: watch that one.
		stop = watch(r.wd, r.moved, r.active.elapsed, r.ret.Cancel)
	}
	r.body, r.skip, r.cancel, r.stopWD = body, skip, cancel, stop
	if skip > 0 && r.src.network() && !r.notedDrop && r.ev != nil {
		r.notedDrop = true
		r.ev.note("registry does not serve this byte range; resuming by reading from byte 0 and dropping what is already here")
	}
}

// fail ends the current connection after err and, if the policy allows,
// leaves the reader ready to reopen where it stopped.
func (r *healingReader) fail(err error) {
	r.stopWD()
	r.body.Close()
	r.body = nil
	var rn *reopenNow
	if errors.As(err, &rn) && r.reopens < maxReopensNow {
		// Not the server's failure: go on over one connection, or from
		// the next source, without an attempt or a backoff.
		r.reopens++
		r.cancel(nil)
		return
	}
	r.err = r.retry(err)
	r.cancel(nil)
}

// reopenNow marks a read that ended for a reason that is not a failure of
// the source: a parallel read falling back to one connection (degrade,
// never die), or a switch of source to one that sends the whole blob.
// The healing reader reopens at once, up to maxReopensNow times.
type reopenNow struct{ err error }

func (e *reopenNow) Error() string { return e.err.Error() }
func (e *reopenNow) Unwrap() error { return e.err }

// maxReopensNow bounds the free reopens of one reader, in case a server
// keeps changing its mind.
const maxReopensNow = 4

func (r *healingReader) retry(err error) error {
	var re *readerError
	if errors.As(err, &re) {
		return re // a range of a parallel read used its attempts
	}
	if rerr := r.ret.Retry(r.ctx, err, r.offset); rerr != nil {
		return &readerError{rerr}
	}
	return nil
}

func (r *healingReader) finish() {
	r.delivered.Store(true)
	r.closeBody()
	if r.digester != nil {
		if got := r.digester.Digest(); got != r.desc.Digest {
			suspect(r.src, r.desc)
			r.err = &readerError{fmt.Errorf("%w: got %s, want %s", content.ErrMismatchedDigest, got, r.desc.Digest)}
			return
		}
	}
	r.err = io.EOF
}

func (r *healingReader) closeBody() {
	if r.body != nil {
		r.stopWD()
		r.body.Close()
		r.body = nil
		r.cancel(nil)
	}
}

// Close releases the connection. Reads after Close fail.
func (r *healingReader) Close() error {
	r.closeBody()
	if r.err == nil {
		r.err = errReaderClosed
	}
	return nil
}

var errReaderClosed = errors.New("reader closed")

// readerError marks an error that the healing reader already retried as
// far as the policy allows: the code around it must not retry it again.
type readerError struct{ err error }

func (e *readerError) Error() string { return e.err.Error() }
func (e *readerError) Unwrap() error { return e.err }

// finalReaderError returns the reader's own final error if err came from
// it, unwrapping the destination's wrapping.
func finalReaderError(err error) (error, bool) {
	var re *readerError
	if errors.As(err, &re) {
		return re.err, true
	}
	return nil, false
}

// errCannotReread: a pushed stream broke and the registry holds fewer
// bytes than were read from it, and the reader can neither seek nor be
// reopened: the caller's content is gone.
var errCannotReread = errors.New("content cannot be re-read from the offset the registry holds")

// readerSource serves Wrap's Push: the caller's reader first, then, after a
// failure, whatever can deliver the bytes from the registry's offset: the
// source of a reader that came from a wrapped Fetch (a fresh ranged GET),
// a Seek, or the reader itself when nothing was lost.
func readerSource(r io.Reader) source { return &streamSource{r: r} }

type streamSource struct {
	r        io.Reader
	consumed int64
	used     bool
}

func (s *streamSource) network() bool {
	fb, ok := s.r.(*fetchedBlob)
	return ok && fb.hr.src.network()
}

func (s *streamSource) parallel(desc ocispec.Descriptor, offset, end int64, ev *blobEvents) bool {
	if fb, ok := s.r.(*fetchedBlob); ok && (s.used || offset > 0) && offset != s.consumed {
		return fb.hr.src.parallel(desc, offset, end, ev)
	}
	return false
}

func (s *streamSource) open(ctx context.Context, desc ocispec.Descriptor, offset, end int64, ev *blobEvents, state *pullState) (io.ReadCloser, int64, error) {
	if !s.used && offset == 0 {
		s.used = true
		return io.NopCloser(&countingStream{s}), 0, nil
	}
	if fb, ok := s.r.(*fetchedBlob); ok && offset != s.consumed {
		// Bytes were lost: fetch again from the source. The reader's own
		// connections go first; a parallel read among them holds buffers
		// of the copy-wide window that this one needs.
		fb.hr.closeBody()
		return fb.hr.src.open(ctx, desc, offset, end, ev, state)
	}
	if sk, ok := s.r.(io.Seeker); ok {
		if _, err := sk.Seek(offset, io.SeekStart); err != nil {
			return nil, 0, retrypolicy.Permanent(fmt.Errorf("%w: %w", errCannotReread, err))
		}
		s.consumed = offset
		return io.NopCloser(&countingStream{s}), 0, nil
	}
	if offset == s.consumed {
		return io.NopCloser(&countingStream{s}), 0, nil
	}
	return nil, 0, retrypolicy.Permanent(fmt.Errorf("%w: registry holds %d bytes, %d were read", errCannotReread, offset, s.consumed))
}

type countingStream struct{ s *streamSource }

func (c *countingStream) Read(p []byte) (int, error) {
	n, err := c.s.r.Read(p)
	c.s.consumed += int64(n)
	return n, err
}

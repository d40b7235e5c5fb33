package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sturdyoci/sturdy/internal/httpblob"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Mirror is an alternate source of content by digest: a pull-through
// cache or P2P daemon (a *remote.Repository on its host, with whatever
// client and headers it needs), a shared OCI layout (oci.Store), any
// content.ReadOnlyStorage. Every byte read from it is verified against
// the digest, so any mirror is safe to read from; tags are never resolved
// on one.
type Mirror struct {
	// Name names the mirror in events, notes and the Tracker's summary.
	// Empty means the repository's host for a *remote.Repository, and
	// "mirror N" (1-based) otherwise.
	Name string
	// Target serves blobs and manifests by digest.
	Target content.ReadOnlyStorage
}

// OriginName is the name of the copy's own source in events and the
// Tracker's summary when Options.Mirrors is set.
const OriginName = "origin"

// chainMember is one source of a chain: a mirror, or the origin (last).
type chainMember struct {
	name      string
	origin    bool
	network   bool // a registry or a URL, not a local store
	openRange func(ctx context.Context, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error)
	fetch     func(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	failures  atomic.Int32
	aside     atomic.Bool
}

// sourceChain reads content by digest from the mirrors in order, then the
// origin. A mirror that lacks a blob passes it on at once; one that fails
// passes it on from the byte it reached, and is set aside for the rest of
// the copy when it failed without moving a byte, stalled, failed twice, or
// served bytes that did not verify.
type sourceChain struct {
	members []*chainMember
	obs     progress.Observer
	opts    Options

	mu     sync.Mutex
	next   map[digest.Digest]int                       // first member to try for a digest
	served map[digest.Digest]map[*chainMember]struct{} // members that served bytes of a digest
	only   map[digest.Digest]struct{}                  // digests that come from the origin only
}

// mirrorFailuresAside is how many failures after progress set a mirror
// aside; a failure without progress, a stall or wrong bytes set it aside
// at once.
const mirrorFailuresAside = 2

func newSourceChain(origin content.Fetcher, opts Options) *sourceChain {
	c := &sourceChain{obs: opts.observer(), opts: opts, next: map[digest.Digest]int{},
		served: map[digest.Digest]map[*chainMember]struct{}{}, only: map[digest.Digest]struct{}{}}
	for i, m := range opts.Mirrors {
		t := rewireTarget(m.Target, opts)
		name := m.Name
		if name == "" {
			name = fmt.Sprintf("mirror %d", i+1)
			if r, ok := unwrapTarget(t).(*remote.Repository); ok {
				name = r.Reference.Host()
			}
		}
		c.members = append(c.members, memberOf(name, t))
	}
	o := memberOf(OriginName, origin)
	o.origin = true
	c.members = append(c.members, o)
	return c
}

func memberOf(name string, f content.Fetcher) *chainMember {
	m := &chainMember{name: name, fetch: f.Fetch}
	switch t := unwrapTarget(f).(type) {
	case *remote.Repository:
		m.openRange, m.network = httpblob.FromRepository(t).OpenRange, true
	case *URLSource:
		m.openRange, m.network = t.openRange, true
	default:
		m.openRange = func(ctx context.Context, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error) {
			return fetchRange(ctx, f, desc, start, end)
		}
	}
	return m
}

// fetchRange reads [start, end) of desc from a local store: seeked where
// it can (oci.Store and file.Store hand out files), else read and
// dropped, which costs no network.
func fetchRange(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error) {
	rc, skip, err := fetcherSource{f}.open(ctx, desc, start, end, nil, nil)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, skip); err != nil {
		rc.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, end-start), rc}, nil
}

// network reports whether any member reads over a network.
func (c *sourceChain) network() bool {
	return slices.ContainsFunc(c.members, func(m *chainMember) bool { return m.network })
}

// first is the member to try first for d.
func (c *sourceChain) first(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.only[d]; ok {
		return len(c.members) - 1
	}
	return c.next[d]
}

// passOn makes later reads of d start after member i.
func (c *sourceChain) passOn(d digest.Digest, i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next[d] = max(c.next[d], i+1)
}

func (c *sourceChain) markServed(d digest.Digest, m *chainMember) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.served[d]
	if s == nil {
		s = map[*chainMember]struct{}{}
		c.served[d] = s
	}
	s[m] = struct{}{}
}

// failed records a failure of m; moved says whether the connection moved
// bytes before it broke.
func (c *sourceChain) failed(m *chainMember, err error, moved bool) {
	if m.origin {
		return
	}
	stalled := errors.Is(err, retrypolicy.ErrStalled) || errors.Is(err, retrypolicy.ErrTooSlow)
	if !moved || stalled || m.failures.Add(1) >= mirrorFailuresAside {
		c.setAside(m, c.opts.Retry.Verdict(err).Reason)
	}
}

func (c *sourceChain) setAside(m *chainMember, why string) {
	if m.origin || m.aside.Swap(true) {
		return
	}
	c.obs.OnEvent(progress.Event{Kind: progress.Note, Source: m.name,
		Reason: fmt.Sprintf("mirror %s set aside for the rest of the copy: %s", m.name, why)})
}

// corrupted: the bytes of d did not verify. Every mirror that served some
// of them is set aside, and d comes from the origin only.
func (c *sourceChain) corrupted(d digest.Digest) {
	c.mu.Lock()
	c.only[d] = struct{}{}
	var suspects []*chainMember
	for m := range c.served[d] {
		suspects = append(suspects, m)
	}
	c.mu.Unlock()
	for _, m := range suspects {
		c.setAside(m, "served bytes that failed the digest check")
	}
}

// usable says whether m may serve d now.
func (c *sourceChain) usable(m *chainMember) bool { return m.origin || !m.aside.Load() }

// mirrorWatch is the watchdog of one connection to a mirror. It cuts at
// half the StallTimeout (and half the low-speed window), before the
// reader's own watchdog would end the attempt: a hung mirror passes the
// read on to the next source without spending an attempt or a backoff.
// Its clock runs only while the mirror is asked for bytes.
type mirrorWatch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	moved  atomic.Int64
	active activeClock
	stop   func()
}

func (c *sourceChain) watchMirror(parent context.Context) *mirrorWatch {
	w := &mirrorWatch{}
	w.ctx, w.cancel = context.WithCancelCause(parent)
	cfg := c.opts.watchdogConfig()
	if cfg.stall > 0 {
		cfg.stall /= 2
	}
	cfg.lowTime /= 2
	w.stop = watch(cfg, &w.moved, w.active.elapsed, w.cancel)
	return w
}

// cut reports whether the watchdog ended the connection.
func (w *mirrorWatch) cut() bool {
	if w == nil {
		return false
	}
	cause := context.Cause(w.ctx)
	return errors.Is(cause, retrypolicy.ErrStalled) || errors.Is(cause, retrypolicy.ErrTooSlow)
}

func (w *mirrorWatch) end() {
	if w != nil {
		w.stop()
		w.cancel(nil)
	}
}

// passable says whether a mirror's failure sends the read to the next
// source rather than ending it: anything but the end of ctx.
func passable(ctx context.Context) bool { return ctx.Err() == nil }

// openRange opens [start, end) of desc on the first usable source, passing
// a blob a mirror lacks or fails to the next one at once. Its errors and
// body are those of httpblob.OpenRange (ErrRangeIgnored with the whole
// body).
func (c *sourceChain) openRange(ctx context.Context, desc ocispec.Descriptor, start, end int64, ev *blobEvents) (io.ReadCloser, error) {
	return c.openFrom(ctx, desc, start, end, c.first(desc.Digest), ev)
}

func (c *sourceChain) openFrom(ctx context.Context, desc ocispec.Descriptor, start, end int64, from int, ev *blobEvents) (io.ReadCloser, error) {
	for i := from; i < len(c.members); i++ {
		m := c.members[i]
		if !c.usable(m) {
			continue
		}
		octx := ctx
		var w *mirrorWatch
		if !m.origin {
			w = c.watchMirror(ctx)
			octx = w.ctx
			w.active.enter()
		}
		rc, err := m.openRange(octx, desc, start, end)
		if w != nil {
			w.active.leave()
		}
		if err == nil || errors.Is(err, httpblob.ErrRangeIgnored) {
			b := &chainBody{c: c, m: m, idx: i, ctx: ctx, w: w, desc: desc, rc: rc, pos: start, end: end, ev: ev}
			if err != nil {
				b.pos, b.end = 0, desc.Size // the whole blob
			}
			ev.using(m.name)
			return b, err
		}
		w.end()
		if m.origin || !passable(ctx) {
			return nil, err
		}
		if w.cut() || !errors.Is(err, errdef.ErrNotFound) {
			// A 404 is this blob's; anything else is the mirror's.
			c.failed(m, errors.Join(err, context.Cause(w.ctx)), false)
		}
		c.passOn(desc.Digest, i)
	}
	return nil, fmt.Errorf("%s: no usable source: %w", desc.Digest, errdef.ErrNotFound)
}

// fetch reads a manifest whole from the first source that has it and
// whose bytes verify.
func (c *sourceChain) fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	for i := c.first(desc.Digest); i < len(c.members); i++ {
		m := c.members[i]
		if !c.usable(m) {
			continue
		}
		if m.origin {
			return m.fetch(ctx, desc)
		}
		raw, err := fetchVerified(ctx, m.fetch, desc, c.opts.maxMetadataBytes())
		if err == nil {
			return io.NopCloser(bytes.NewReader(raw)), nil
		}
		if !passable(ctx) {
			return nil, err
		}
		switch {
		case errors.Is(err, errdef.ErrNotFound):
		case errors.Is(err, content.ErrMismatchedDigest), errors.Is(err, content.ErrTrailingData):
			c.setAside(m, "served bytes that failed the digest check")
		default:
			c.failed(m, err, false)
		}
		c.passOn(desc.Digest, i)
	}
	return nil, fmt.Errorf("%s: no usable source: %w", desc.Digest, errdef.ErrNotFound)
}

// fetchVerified reads desc whole with fetch, within limit, and checks it.
func fetchVerified(ctx context.Context, fetch func(context.Context, ocispec.Descriptor) (io.ReadCloser, error), desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if desc.Size > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than %d: %w", desc.Digest, desc.Size, limit, errdef.ErrSizeExceedsLimit)
	}
	rc, err := fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return content.ReadAll(rc, desc)
}

// chainBody is a body from one source of the chain. When a mirror breaks
// in the middle, it goes on from the same byte on the next source, unseen
// by its reader: no attempt is spent, no backoff slept. The origin's
// errors, and any once the read's context has ended (a watchdog's cut, a
// deadline), are its reader's to retry; the next open starts after the
// mirror that failed.
type chainBody struct {
	c    *sourceChain
	m    *chainMember
	idx  int
	ctx  context.Context // the read's
	w    *mirrorWatch    // the mirror connection's watchdog; nil on the origin
	desc ocispec.Descriptor
	ev   *blobEvents

	pos, end int64 // the next byte this body gives, and where it stops
	moved    bool  // this connection moved bytes
	err      error // sticky: the next source could not be opened
	// unserved counts bytes read from m not yet reported (flush);
	// atomic, as Close may come from a watchdog's goroutine.
	unserved atomic.Int64

	// mu guards rc, w, m and closed: a parallel range's watchdog closes the
	// body from another goroutine, possibly while Read switches sources.
	mu     sync.Mutex
	rc     io.ReadCloser
	closed bool
}

func (b *chainBody) current() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rc
}

func (b *chainBody) Read(p []byte) (int, error) {
	for b.err == nil {
		if b.w != nil {
			b.w.active.enter()
		}
		n, err := b.current().Read(p)
		if b.w != nil {
			b.w.active.leave()
			b.w.moved.Add(int64(n))
		}
		if n > 0 {
			b.pos += int64(n)
			b.unserved.Add(int64(n))
			if !b.moved {
				b.moved = true
				b.c.markServed(b.desc.Digest, b.m)
			}
		}
		if err == nil || err == io.EOF || b.m.origin {
			return n, err
		}
		cause := context.Cause(b.ctx)
		if b.w.cut() {
			cause = context.Cause(b.w.ctx)
		}
		b.c.failed(b.m, errors.Join(err, cause), b.moved)
		b.c.passOn(b.desc.Digest, b.idx)
		if b.ctx.Err() != nil {
			return n, err // the read's end: its reader retries
		}
		// A mirror broke mid-body: go on from here on the next source.
		b.switchSource()
		if n > 0 {
			return n, nil
		}
	}
	return 0, b.err
}

// switchSource reopens the rest of the body on the next usable source, or
// makes its error sticky.
// flush reports the bytes read from the current source since the last
// flush: once per connection, not on every read.
func (b *chainBody) flush() {
	if n := b.unserved.Swap(0); n > 0 {
		b.mu.Lock()
		name := b.m.name
		b.mu.Unlock()
		b.ev.served(name, n)
	}
}

func (b *chainBody) switchSource() {
	b.flush()
	b.current().Close()
	b.w.end()
	rc, err := b.c.openFrom(b.ctx, b.desc, b.pos, b.end, b.idx+1, b.ev)
	if err != nil && !errors.Is(err, httpblob.ErrRangeIgnored) {
		b.err = err
		return
	}
	nb := rc.(*chainBody)
	if err != nil && b.pos > 0 {
		// The next source sends the whole blob: its reader reopens at
		// once and drops what it has, under its watchdog, counted.
		nb.Close()
		b.err = &reopenNow{fmt.Errorf("%s sends the whole blob: %w", nb.m.name, err)}
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		nb.Close()
		b.err = errReaderClosed
		return
	}
	b.rc, b.w, b.m = nb.rc, nb.w, nb.m
	b.mu.Unlock()
	b.idx, b.moved = nb.idx, false
	b.ev.note("a mirror failed mid-blob; continuing from the byte it reached on " + b.m.name)
}

func (b *chainBody) Close() error {
	b.flush()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	err := b.rc.Close()
	b.w.end()
	return err
}

package transfer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/internal/statedir"
	"github.com/sturdyoci/sturdy/progress"
)

// Pull state is checkpointed (its meta rewritten with the bytes kept) every
// stateMetaBytes or stateMetaEvery, and the kept bytes are fsync'd every
// stateSyncBytes or stateSyncEvery, and when the blob's attempt ends. A
// process killed outright loses at most the bytes since the last meta
// write (the kernel keeps what was written); a machine that loses power
// may lose more, and what it garbles fails the digest check, which
// restarts the blob.
const (
	stateMetaBytes = 8 << 20
	stateMetaEvery = time.Second
	stateSyncBytes = 64 << 20
	stateSyncEvery = 5 * time.Second
	// minStateSize: smaller blobs are not worth a directory.
	minStateSize = 1 << 20
)

// stateDir is an open Options.StateDir.
type stateDir struct{ d *statedir.Dir }

func openStateDir(path string) (*stateDir, error) {
	if path == "" {
		return nil, nil
	}
	d, err := statedir.Open(path, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: StateDir: %w", ErrInvalidOptions, err)
	}
	return &stateDir{d}, nil
}

// lock takes desc's state for this copy, or says in a Note why the blob
// goes without it.
func (s *stateDir) lock(desc ocispec.Descriptor, ev *blobEvents) *statedir.Blob {
	if s == nil || desc.Size < minStateSize || isManifest(desc) {
		return nil
	}
	b, err := s.d.Lock(desc.Digest)
	switch {
	case err == nil:
		return b
	case errors.Is(err, statedir.ErrLocked):
		ev.note("another copy holds the kept state of this blob; copying it without state")
	default:
		ev.note("cannot use the state directory for this blob (" + err.Error() + "); copying it without state")
	}
	return nil
}

// forget removes the state of a blob the destination already has, unless
// another copy holds it.
func (s *stateDir) forget(desc ocispec.Descriptor) {
	if s == nil || desc.Size < minStateSize || isManifest(desc) {
		return
	}
	if b, err := s.d.Lock(desc.Digest); err == nil {
		b.Remove()
	}
}

// pullState keeps the bytes of one blob a pull has received: the
// contiguous prefix handed on, from byte 0, and the ranges a parallel read
// fetched whole ahead of it, each written at its offset (the data file is
// sparse), so that the next process hands them on again from disk and
// fetches only the rest. They are not trusted: they flow into the stream
// whose digest is checked as a whole.
type pullState struct {
	mu   sync.Mutex
	b    *statedir.Blob
	desc ocispec.Descriptor
	ev   *blobEvents
	f    *os.File
	// kept is the length of data valid from byte 0; spans the complete
	// spans written beyond it (sorted, apart, never touching kept: they
	// join it when it reaches them).
	kept  int64
	spans []statedir.Span
	// usable and usableSpans are what a reader may serve from data: what
	// an earlier process kept, as it was when the blob began.
	usable      int64
	usableSpans []statedir.Span
	// unrecorded and unsynced count the bytes written since the last meta
	// write and the last fsync.
	unrecorded, unsynced int64
	recordedAt, syncedAt time.Time
	failed               bool // a write failed: nothing more is kept
}

// openPull takes the pull state of desc: the bytes kept by an earlier
// process when its meta and data check out, else a fresh spool. A Note
// says why kept state was discarded.
func (s *stateDir) openPull(desc ocispec.Descriptor, ev *blobEvents) *pullState {
	if s == nil {
		return nil
	}
	b := s.lock(desc, ev)
	if b == nil {
		return nil
	}
	p := &pullState{b: b, desc: desc, ev: ev}
	m, err := b.ReadMeta()
	var kept int64
	var spans []statedir.Span
	switch {
	case errors.Is(err, statedir.ErrNoState):
	case err != nil:
		ev.note("kept state of this blob is unusable (" + err.Error() + "); discarded it")
	case m.Size != desc.Size:
		ev.note(fmt.Sprintf("kept state of this blob names size %d, not %d; discarded it", m.Size, desc.Size))
	case m.Kind != statedir.KindPull:
		// A push kept for this digest (another copy, another day): this
		// copy pulls it; the registry collects the session.
	default:
		kept, spans = m.Kept, m.Ranges
	}
	f, err := b.OpenData()
	if err != nil {
		ev.note("cannot keep the bytes of this blob (" + err.Error() + "); copying it without state")
		b.Unlock()
		return nil
	}
	p.f = f
	if kept > 0 || len(spans) > 0 {
		info, err := f.Stat()
		switch {
		case err != nil:
			kept, spans = 0, nil
		case info.Size() < kept:
			ev.note(fmt.Sprintf("kept bytes of this blob are truncated (%d of %d); discarded them", info.Size(), kept))
			kept, spans = 0, nil
		case len(spans) > 0 && info.Size() < spans[len(spans)-1].End:
			ev.note(fmt.Sprintf("kept ranges of this blob are truncated (%d of %d bytes); discarded them", info.Size(), spans[len(spans)-1].End))
			spans = nil
		}
	}
	// Bytes beyond the last checkpoint are not counted on: cut them off.
	// (Between the kept spans, data holds what no meta claims; never read.)
	size := kept
	if len(spans) > 0 {
		size = spans[len(spans)-1].End
	}
	if err := f.Truncate(size); err != nil {
		p.close()
		return nil
	}
	p.kept, p.usable = kept, kept
	p.spans, p.usableSpans = spans, slices.Clone(spans)
	p.recordedAt, p.syncedAt = time.Now(), time.Now()
	if err := p.writeMeta(); err != nil {
		p.fail(err)
	}
	return p
}

func (p *pullState) writeMeta() error {
	// Past MaxRanges the furthest spans stay unrecorded: only bytes.
	spans := p.spans[:min(len(p.spans), statedir.MaxRanges)]
	return p.b.WriteMeta(statedir.Meta{Size: p.desc.Size, Kind: statedir.KindPull, Kept: p.kept, Ranges: spans, Updated: time.Now()})
}

// local returns the spans a reader may serve from kept bytes, in order
// (the prefix first, from byte 0), and how many bytes they hold.
func (p *pullState) local() ([]statedir.Span, int64) {
	if p == nil {
		return nil, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []statedir.Span
	if p.usable > 0 {
		out = append(out, statedir.Span{End: p.usable})
	}
	out = append(out, p.usableSpans...)
	var n int64
	for _, s := range out {
		n += s.Len()
	}
	return out, n
}

// readAt reads kept bytes; only inside what was usable when the blob
// began.
func (p *pullState) readAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	end := int64(-1)
	if off < p.usable {
		end = p.usable
	}
	for _, s := range p.usableSpans {
		if s.Start <= off && off < s.End {
			end = s.End
		}
	}
	if p.f == nil || end <= off {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), end-off)]
	return p.f.ReadAt(b, off)
}

// keep writes the part of b (at blob offset off) that is not kept yet. A
// b beyond the prefix must be a whole range, or all of a range received
// so far: it is kept as a span, and counted on as it is.
func (p *pullState) keep(b []byte, off int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	end := off + int64(len(b))
	if p.f == nil || p.failed || len(b) == 0 || end <= p.kept {
		return
	}
	if off <= p.kept {
		b, off = b[p.kept-off:], p.kept
	}
	// Skip what a kept span already holds at the start.
	i, _ := slices.BinarySearchFunc(p.spans, off, func(s statedir.Span, o int64) int { return cmp.Compare(s.End, o+1) })
	if i < len(p.spans) && p.spans[i].Start <= off {
		if end <= p.spans[i].End {
			return
		}
		b, off = b[p.spans[i].End-off:], p.spans[i].End
	}
	if _, err := p.f.WriteAt(b, off); err != nil {
		p.failLocked(err)
		return
	}
	p.addLocked(statedir.Span{Start: off, End: end})
	n := int64(len(b))
	p.unrecorded += n
	p.unsynced += n
	now := time.Now()
	if p.unsynced >= stateSyncBytes || now.Sub(p.syncedAt) >= stateSyncEvery {
		p.syncLocked(now)
	}
	if p.unrecorded >= stateMetaBytes || now.Sub(p.recordedAt) >= stateMetaEvery {
		p.recordLocked(now)
	}
}

// addLocked records that s is written: merged with the spans it touches,
// and into the prefix when it reaches it (spans it reaches then join too).
func (p *pullState) addLocked(s statedir.Span) {
	spans := p.spans[:0:0]
	for _, o := range p.spans {
		if o.End < s.Start || o.Start > s.End {
			spans = append(spans, o)
			continue
		}
		s.Start, s.End = min(s.Start, o.Start), max(s.End, o.End)
	}
	i, _ := slices.BinarySearchFunc(spans, s.Start, func(o statedir.Span, start int64) int { return cmp.Compare(o.Start, start) })
	spans = slices.Insert(spans, i, s)
	for len(spans) > 0 && spans[0].Start <= p.kept {
		p.kept = max(p.kept, spans[0].End)
		spans = spans[1:]
	}
	p.spans = spans
}

func (p *pullState) syncLocked(now time.Time) {
	if err := p.f.Sync(); err != nil {
		p.failLocked(err)
		return
	}
	p.unsynced, p.syncedAt = 0, now
}

func (p *pullState) recordLocked(now time.Time) {
	if err := p.writeMeta(); err != nil {
		p.failLocked(err)
		return
	}
	p.unrecorded, p.recordedAt = 0, now
}

func (p *pullState) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failLocked(err)
}

// failLocked stops keeping bytes (a full disk must not fail the copy) and
// leaves the state as last recorded.
func (p *pullState) failLocked(err error) {
	if !p.failed {
		p.failed = true
		p.ev.note("cannot keep more bytes of this blob (" + err.Error() + "); the copy goes on without")
	}
}

// restart drops every kept byte: the blob did not verify, and what is
// kept may be why. What the next attempt receives is kept afresh.
func (p *pullState) restart() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return
	}
	if err := p.f.Truncate(0); err != nil {
		p.failLocked(err)
	}
	p.kept, p.usable, p.unrecorded, p.unsynced = 0, 0, 0, 0
	p.spans, p.usableSpans = nil, nil
	if !p.failed {
		if err := p.writeMeta(); err != nil {
			p.failLocked(err)
		}
	}
}

// close checkpoints what is kept for a later process and releases it.
func (p *pullState) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		if !p.failed {
			now := time.Now()
			p.syncLocked(now)
			p.recordLocked(now)
		}
		p.f.Close()
		p.f = nil
	}
	p.b.Unlock()
}

// done removes the state of a blob that is in the destination.
func (p *pullState) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
	p.b.Remove()
}

// reusedResumed reports that a blob continues at offset from state kept
// by an earlier process: reused bytes (all the blob will take from it) do
// not cross the wire again.
func (b *blobEvents) reusedResumed(offset, reused int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastOffset, b.lastAt = offset, time.Now()
	b.emit(progress.Event{Kind: progress.Resumed, Offset: offset, Reused: reused})
}

// pushState keeps the upload session of one blob: its first Location (the
// one the POST answered), the digest and the destination repository. The
// bytes are the registry's to keep; the next process asks it how many it
// holds.
type pushState struct {
	b        *statedir.Blob
	desc     ocispec.Descriptor
	ev       *blobEvents
	repo     string // the destination, "host/name"
	location string // kept by an earlier process for this repository
	failed   bool
}

func (s *stateDir) openPush(desc ocispec.Descriptor, repo string, ev *blobEvents) *pushState {
	if s == nil {
		return nil
	}
	b := s.lock(desc, ev)
	if b == nil {
		return nil
	}
	p := &pushState{b: b, desc: desc, ev: ev, repo: repo}
	m, err := b.ReadMeta()
	switch {
	case errors.Is(err, statedir.ErrNoState):
	case err != nil:
		ev.note("kept state of this blob is unusable (" + err.Error() + "); discarded it")
	case m.Kind == statedir.KindPush && m.Size == desc.Size && m.Repository == repo:
		p.location = m.Location
	}
	if p.location == "" {
		p.forget()
	}
	return p
}

// record keeps a new session's Location.
func (p *pushState) record(location string) {
	if p == nil || p.failed {
		return
	}
	err := p.b.WriteMeta(statedir.Meta{Size: p.desc.Size, Kind: statedir.KindPush, Location: location, Repository: p.repo, Updated: time.Now()})
	if err != nil {
		p.failed = true
		// The error names the file, never the Location.
		p.ev.note("cannot keep the upload session of this blob (" + err.Error() + "); the copy goes on without")
	}
}

// forget drops the kept session: it was deleted, or is unusable.
func (p *pushState) forget() {
	if p == nil {
		return
	}
	p.location = ""
	if err := p.b.Clear(); err != nil {
		p.failed = true
	}
}

func (p *pushState) done() {
	if p != nil {
		p.b.Remove()
	}
}

func (p *pushState) close() {
	if p != nil {
		p.b.Unlock()
	}
}

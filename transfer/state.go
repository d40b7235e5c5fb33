package transfer

import (
	"errors"
	"fmt"
	"io"
	"os"
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

// pullState keeps the bytes of one blob a pull has handed on, in order
// from byte 0, so that the next process hands them on again from disk and
// fetches only the rest. They are not trusted: they flow into the stream
// whose digest is checked as a whole.
type pullState struct {
	mu   sync.Mutex
	b    *statedir.Blob
	desc ocispec.Descriptor
	ev   *blobEvents
	f    *os.File
	// kept is the length of data, valid as written; usable the bytes a
	// reader may serve from it (what was kept when the blob began).
	kept, usable         int64
	recorded, synced     int64
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
		kept = m.Kept
	}
	f, err := b.OpenData()
	if err != nil {
		ev.note("cannot keep the bytes of this blob (" + err.Error() + "); copying it without state")
		b.Unlock()
		return nil
	}
	p.f = f
	if kept > 0 {
		info, err := f.Stat()
		switch {
		case err != nil:
			kept = 0
		case info.Size() < kept:
			ev.note(fmt.Sprintf("kept bytes of this blob are truncated (%d of %d); discarded them", info.Size(), kept))
			kept = 0
		}
	}
	// Bytes beyond the last checkpoint are not counted on: cut them off.
	if err := f.Truncate(kept); err != nil {
		p.close()
		return nil
	}
	p.kept, p.usable, p.recorded, p.synced = kept, kept, kept, kept
	p.recordedAt, p.syncedAt = time.Now(), time.Now()
	if err := p.writeMeta(); err != nil {
		p.fail(err)
	}
	return p
}

func (p *pullState) writeMeta() error {
	return p.b.WriteMeta(statedir.Meta{Size: p.desc.Size, Kind: statedir.KindPull, Kept: p.kept, Updated: time.Now()})
}

// readAt reads kept bytes; only below usable.
func (p *pullState) readAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil || off >= p.usable {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.usable-off)]
	return p.f.ReadAt(b, off)
}

// keep appends the part of b (at blob offset off) beyond what is kept.
// Bytes must come in order: a gap would be kept as garbage.
func (p *pullState) keep(b []byte, off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil || p.failed || off > p.kept || off+int64(len(b)) <= p.kept {
		return
	}
	b = b[p.kept-off:]
	if _, err := p.f.WriteAt(b, p.kept); err != nil {
		p.failLocked(err)
		return
	}
	p.kept += int64(len(b))
	now := time.Now()
	if p.kept-p.synced >= stateSyncBytes || now.Sub(p.syncedAt) >= stateSyncEvery {
		p.syncLocked(now)
	}
	if p.kept-p.recorded >= stateMetaBytes || now.Sub(p.recordedAt) >= stateMetaEvery {
		p.recordLocked(now)
	}
}

func (p *pullState) syncLocked(now time.Time) {
	if err := p.f.Sync(); err != nil {
		p.failLocked(err)
		return
	}
	p.synced, p.syncedAt = p.kept, now
}

func (p *pullState) recordLocked(now time.Time) {
	if err := p.writeMeta(); err != nil {
		p.failLocked(err)
		return
	}
	p.recorded, p.recordedAt = p.kept, now
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
	p.kept, p.usable, p.recorded, p.synced = 0, 0, 0, 0
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

// reusedResumed reports that a blob continues from state kept by an
// earlier process: offset bytes did not cross the wire again.
func (b *blobEvents) reusedResumed(offset int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastOffset, b.lastAt = offset, time.Now()
	b.emit(progress.Event{Kind: progress.Resumed, Offset: offset, Reused: offset})
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

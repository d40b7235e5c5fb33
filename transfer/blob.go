package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sturdyoci/sturdy/internal/ctxsleep"
	"github.com/sturdyoci/sturdy/internal/httpblob"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// blobMover moves single blobs from a source to a destination.
type blobMover struct {
	opts    Options
	src     source
	srcRepo *remote.Repository // for automatic mounts; nil if not a registry
	dst     content.Storage
	dstRepo *remote.Repository // nil if the destination is not a registry
	wd      watchdogConfig
	state   *stateDir // nil: Options.StateDir is off (or a Wrap)
}

// newBlobMover moves blobs from src to dst, targets that rewireTarget
// has already seen.
func newBlobMover(src content.ReadOnlyStorage, dst content.Storage, opts Options) *blobMover {
	// The Logger is folded into the Observer once: nothing logs twice.
	opts.Observer, opts.Logger = opts.observer(), nil
	m := &blobMover{opts: opts, src: newSource(src, opts), dst: dst, wd: opts.watchdogConfig()}
	if r, ok := unwrapTarget(src).(*remote.Repository); ok {
		m.srcRepo = r
	}
	if r, ok := unwrapTarget(dst).(*remote.Repository); ok {
		m.dstRepo = r
	}
	return m
}

// manifestFetcher is where manifests are read by digest: the mirrors and
// then src when the copy has mirrors, src itself otherwise.
func (m *blobMover) manifestFetcher(src content.Fetcher) content.Fetcher {
	if rs, ok := m.src.(*rangedSource); ok && rs.chain != nil {
		return rs.fetcher
	}
	return src
}

// move moves one blob: skip if present, mount if possible, else send its
// bytes.
func (m *blobMover) move(ctx context.Context, desc ocispec.Descriptor, ev *blobEvents) error {
	exists, err := m.exists(ctx, desc, ev)
	if err != nil {
		return err
	}
	if exists {
		// A process killed between the commit and the cleanup left state.
		m.state.forget(desc)
		ev.skipped("exists")
		return nil
	}
	if from, ok := m.mount(ctx, desc, ev); ok {
		ev.mounted(from)
		return nil
	}
	return m.send(ctx, desc, ev)
}

// send writes the blob's bytes from the source into the destination, a
// push or a pull alike: resumable chunks to a registry, a healing read into
// anything else. It emits Started and, on success, Completed.
func (m *blobMover) send(ctx context.Context, desc ocispec.Descriptor, ev *blobEvents) error {
	ev.started(0)
	var err error
	if m.dstRepo != nil && !m.opts.Monolithic && desc.Size >= minChunkedSize {
		err = m.uploadChunked(ctx, desc, ev)
		if errors.Is(err, httpblob.ErrChunkedUnsupported) {
			ev.note("registry does not support resumable chunked uploads; falling back to monolithic upload (restarts from byte 0)")
			err = m.pushWhole(ctx, desc, ev)
		}
	} else {
		err = m.pushWhole(ctx, desc, ev)
	}
	if errors.Is(err, errdef.ErrAlreadyExists) {
		err = nil // another copy pushed it meanwhile
	}
	if err != nil {
		return err
	}
	ev.completed()
	return nil
}

func (m *blobMover) exists(ctx context.Context, desc ocispec.Descriptor, ev *blobEvents) (bool, error) {
	var ok bool
	err := doMetadata(ctx, m.opts, opExists, ev, 0, func(ctx context.Context) error {
		var err error
		ok, err = m.dst.Exists(ctx, desc)
		return err
	})
	return ok, err
}

// errNoMountFallback makes oras-go's Mount fail instead of falling back to
// its own monolithic upload when the registry declines to mount.
var errNoMountFallback = errors.New("mount declined")

// mount tries a cross-repository mount from the source repository (same
// registry) and from Options.MountFrom. Failures are not errors: the blob
// is uploaded instead.
func (m *blobMover) mount(ctx context.Context, desc ocispec.Descriptor, ev *blobEvents) (string, bool) {
	mounter, ok := unwrapTarget(m.dst).(registry.Mounter)
	if !ok || m.dstRepo == nil {
		return "", false
	}
	var from []string
	if m.srcRepo != nil && m.srcRepo.Reference.Registry == m.dstRepo.Reference.Registry &&
		m.srcRepo.Reference.Repository != m.dstRepo.Reference.Repository {
		from = append(from, m.srcRepo.Reference.Repository)
	}
	from = append(from, m.opts.MountFrom...)
	for _, repo := range from {
		if repo == m.dstRepo.Reference.Repository {
			continue
		}
		// oras-go pastes the name into the query unescaped: only a valid
		// repository name may go there.
		if (registry.Reference{Registry: m.dstRepo.Reference.Registry, Repository: repo}).ValidateRepository() != nil {
			continue
		}
		err := doMetadata(ctx, m.opts, opMount, ev, 0, func(ctx context.Context) error {
			return mounter.Mount(ctx, desc, repo, func() (io.ReadCloser, error) { return nil, retrypolicy.Permanent(errNoMountFallback) })
		})
		if err == nil {
			return repo, true
		}
	}
	return "", false
}

// pushWhole pushes through the destination's own Push. Reads from the
// source heal themselves (resume where the source broke); the destination
// itself starts from byte 0 on each of its attempts. A failure of the
// destination to read (a registry that stops taking bytes) is cut after
// twice the stall timeout, so that a stalled source is healed first.
func (m *blobMover) pushWhole(ctx context.Context, desc ocispec.Descriptor, ev *blobEvents) error {
	// The source's reads carry the size-derived deadlines (each reopen on
	// the bytes still to come); a deadline on the whole push as well would
	// cut a slow but healing pull and restart it from byte 0. The
	// destination's side is bounded by its stall and low-speed watchdog.
	outerCfg := policy(m.opts, opPush, ev)
	outerCfg.AttemptTimeout = -1
	outer, err := retrypolicy.NewRetrier(outerCfg, desc.Size)
	if err != nil {
		return err
	}
	restartedAfterMismatch := false
	var ps *pullState
	if m.src.network() {
		// A local source is its own state.
		ps = m.state.openPull(desc, ev)
	}
	defer func() { ps.close() }()
	if _, n := ps.local(); n > 0 {
		// Every byte the blob will take from disk, prefix and ranges.
		ev.reusedResumed(ps.usable, n)
	}
	for {
		inner, err := retrypolicy.NewRetrier(policy(m.opts, opFetch, ev), desc.Size)
		if err != nil {
			return err
		}
		actx, cancel := outer.Begin(ctx, 0)
		if outer.Attempts() > 1 {
			ev.attemptStarts(0)
		}
		hr := newHealingReader(actx, desc, m.src, inner, m.wd, ev, 0)
		if ps != nil {
			hr.useState(ps)
		}
		if verifiesOnPush(m.dst) {
			// One SHA-256 pass is enough: on 2 cores a second one costs
			// a third of a pull's throughput.
			hr.digester = nil
		}
		// Once the source has delivered every byte, the registry is
		// verifying what it got: only the request's own watchdog, with
		// its commit patience, judges that silence.
		stop := watch(m.wd.patient(), hr.moved, idleClock(hr.busy), func(cause error) {
			if !hr.delivered.Load() {
				outer.Cancel(cause)
			}
		})
		// The registry verifies before it answers the final request.
		pctx, slot := captureRetryAfter(withPatience(actx, m.commitPatience(desc.Size)))
		body := &guardedReader{r: hr}
		err = slot.attach(m.dst.Push(pctx, desc, body))
		stop()
		// net/http may still be reading the body after a server answered
		// early: end the attempt (which ends a source read in flight),
		// then close the reader once no Read runs.
		cut := actx.Err() != nil
		body.close(func() { cancel(nil) })
		if err == nil {
			ps.done()
			ps = nil
			return nil
		}
		var re *readerError
		if errors.As(body.err, &re) {
			err = re.err
		}
		if (errors.Is(err, content.ErrMismatchedDigest) || digestRejected(err)) && !restartedAfterMismatch {
			// A resumed stream may have joined two versions of the
			// bytes, or a proxy flipped one: restart once from 0.
			restartedAfterMismatch = true
			suspect(m.src, desc)
			// What was kept may be why (a byte flipped on disk, or one
			// kept from the wire): drop it all, keep afresh.
			ps.restart()
			switch {
			case hr.local > 0:
				ev.note("digest mismatch over bytes kept by an earlier copy; discarded them, restarting from byte 0")
			case hr.resumes > 0:
				ev.note("digest mismatch after a resumed download; restarting from byte 0")
			default:
				ev.note("digest mismatch; restarting from byte 0")
			}
			continue
		}
		if re != nil && !cut {
			return fromSource(err) // already retried as far as the policy allows
		}
		// Otherwise the attempt itself was cut (the destination stalled):
		// the outer loop decides, and names the cause.
		if err := outer.Retry(ctx, err, 0); err != nil {
			return err
		}
	}
}

// guardedReader lets its owner close a reader that another goroutine (the
// transport's body writer) may still be reading: close waits for a Read in
// progress, and later Reads fail. err is the reader's own failure, if it
// failed before close began.
type guardedReader struct {
	mu      sync.Mutex
	r       *healingReader
	closed  bool
	closing atomic.Bool
	err     error
}

func (g *guardedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errReaderClosed
	}
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && !g.closing.Load() {
		g.err = err
	}
	return n, err
}

// close ends a Read in flight with stop (which cancels what it waits on),
// then closes the reader.
func (g *guardedReader) close(stop func()) {
	g.closing.Store(true)
	stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.r.Close()
}

// commitPatience bounds the registry's silence while it verifies a blob
// of size bytes before answering the request that completes it.
func (m *blobMover) commitPatience(size int64) time.Duration {
	return commitPatience(m.wd.stall, m.opts.Retry, size)
}

// minChunkedSize is the smallest blob uploaded with the chunked protocol.
// Below it there is little to resume, and the PATCH is a third request per
// blob: pushing 1000 small blobs took 1.5x as long as oras-go's POST+PUT.
const minChunkedSize = 1 << 20

// verifiesOnPush reports whether dst checks the digest of what it is given
// before it commits it, as oras-go's stores and registries do.
func verifiesOnPush(dst content.Storage) bool {
	switch unwrapTarget(dst).(type) {
	case *oci.Store, *memory.Store, *file.Store, *remote.Repository:
		return true
	}
	return false
}

// uploadChunked uploads to a registry with the chunked protocol and, after
// a failure, asks the registry how much it holds and continues from there,
// re-reading the source from that offset.
func (m *blobMover) uploadChunked(ctx context.Context, desc ocispec.Descriptor, ev *blobEvents) error {
	repo := httpblob.FromRepository(m.dstRepo)
	ret, err := retrypolicy.NewRetrier(policy(m.opts, opPush, ev), desc.Size)
	if err != nil {
		return err
	}
	u := &chunkedUpload{m: m, repo: repo, desc: desc, ev: ev}
	u.ps = m.state.openPush(desc, m.dstRepo.Reference.Registry+"/"+m.dstRepo.Reference.Repository, ev)
	defer u.ps.close()
	if err := u.resumeKept(ctx); err != nil {
		return err
	}
	for {
		actx, cancel := ret.Begin(ctx, u.committed)
		err := u.attempt(actx, ret)
		if err == nil {
			cancel(nil)
			u.ps.done()
			return nil
		}
		if errors.Is(err, httpblob.ErrChunkedUnsupported) {
			cancel(nil)
			u.abandon(ctx)
			return err
		}
		if u.committed == desc.Size || u.sessionGone(err) {
			// Every byte was sent and the commit failed, or the session
			// is gone: the registry may have committed the blob and only
			// the answer was lost. Look before sending it all again.
			if ok, xerr := m.dst.Exists(ctx, desc); xerr == nil && ok {
				cancel(nil)
				u.ps.done()
				return nil
			}
		}
		var offset int64
		switch {
		case u.sessionGone(err):
			// The registry forgot the session (expired, purged, or a
			// restart without shared storage): what it held is gone, so
			// start a new one from byte 0 on the next attempt.
			u.up, u.committed, u.stale = nil, 0, false
			u.ps.forget()
			ev.note("registry lost the upload session; starting a new one from byte 0")
			err = retrypolicy.Transient(err)
		case (digestRejected(err) || errors.Is(err, content.ErrMismatchedDigest)) && !u.restarted:
			// The registry refused the digest of what it holds, or the
			// source stream did not match its digest: the bytes were
			// corrupted somewhere. Start a fresh session from byte 0,
			// once.
			u.restarted = true
			suspect(u.m.src, u.desc)
			cancel(nil)
			u.abandon(ctx)
			if digestRejected(err) {
				ev.note("registry rejected the digest; restarting the upload from byte 0")
			} else {
				ev.note("source stream did not match its digest; restarting the upload from byte 0")
			}
			continue
		default:
			var serr error
			offset, serr = u.settle(ctx)
			if u.statusUnusable(serr) {
				// What broke the attempt stays its reason.
				u.newSession(ctx, serr)
				offset = 0
			}
		}
		if u.statusUnusable(err) {
			// The registry cannot say where the session stands: what it
			// holds past our last confirmed chunk is unknown, so a new
			// session starts from byte 0 (and later breaks do the same).
			u.newSession(ctx, err)
			offset = 0
			err = retrypolicy.Transient(err)
		}
		err = ret.Retry(ctx, err, offset)
		cancel(nil)
		if err != nil {
			if u.ps == nil || u.ps.failed {
				u.abandon(ctx)
			}
			// Otherwise the session is kept for the next process (a
			// cancelled copy too): the registry collects it if none comes.
			return err
		}
	}
}

// resumeKept continues the upload session an earlier process kept, when
// the registry still holds it: its offset is asked (and settled on), and
// the upload goes on from there. A session the registry forgot, or one it
// cannot report on, is dropped with a Note: a new one starts from 0.
func (u *chunkedUpload) resumeKept(ctx context.Context) error {
	if u.ps == nil || u.ps.location == "" {
		return nil
	}
	up, err := u.repo.ResumeUpload(u.ps.location)
	if err != nil {
		u.ps.forget()
		u.ev.note("upload session kept by an earlier copy is unusable (" + retrypolicy.ShortReason(err) + "); starting a new one from byte 0")
		return nil
	}
	u.up = up
	n, err := u.settleKept(ctx)
	switch {
	case err == nil && n > 0:
		u.committed, u.patched = n, true
		u.ev.reusedResumed(n, n)
		return nil
	case err == nil:
		// distribution reads "0-0" for 0 bytes and for 1: a fresh
		// session costs nothing here.
		u.abandon(ctx)
	case ctx.Err() != nil:
		u.up = nil
		return ctx.Err()
	case u.sessionGone(err):
		u.up = nil
		u.ev.note("registry no longer holds the upload session kept by an earlier copy; starting a new one from byte 0")
	default:
		u.ev.note("registry cannot say where the upload session kept by an earlier copy stands (" + retrypolicy.ShortReason(err) + "); starting a new one from byte 0")
		u.abandon(ctx)
	}
	u.ps.forget()
	return nil
}

// settleKept asks a kept session's offset until two answers a moment
// apart agree: the earlier process may have died a moment ago, its last
// PATCH still being written.
func (u *chunkedUpload) settleKept(ctx context.Context) (int64, error) {
	n, err := u.status(ctx)
	start, pause := time.Now(), settlePause
	for err == nil && time.Since(start) < settleMax {
		if err := ctxsleep.Sleep(ctx, pause); err != nil {
			return 0, err
		}
		m, serr := u.status(ctx)
		if serr != nil || m == n {
			return m, serr
		}
		n, pause = m, min(2*pause, settleQuiet)
	}
	return n, err
}

// start opens a new upload session and keeps its Location.
func (u *chunkedUpload) start(ctx context.Context) (*httpblob.Upload, error) {
	up, err := u.repo.StartUpload(ctx)
	if err == nil {
		u.ps.record(up.Location())
	}
	return up, err
}

type chunkedUpload struct {
	m         *blobMover
	repo      *httpblob.Repo
	desc      ocispec.Descriptor
	ev        *blobEvents
	up        *httpblob.Upload
	committed int64 // bytes the registry confirmed
	sent      int64 // bytes streamed in the current attempt
	sentEnd   int64 // the blob offset the last PATCH streamed up to
	stale     bool  // the offset must be asked before the next PATCH
	restarted bool
	noStatus  bool  // the registry cannot report an offset: never ask again
	patched   bool  // a PATCH was sent on the current session
	chunkCap  int64 // > 0: the registry refused larger chunks
	ps        *pushState
}

// chunkLen is the most bytes one PATCH carries: Options.ChunkSize (raised
// to the registry's OCI-Chunk-Min-Length) or the rest of the blob, and
// never more than the registry was seen to accept.
func (u *chunkedUpload) chunkLen() int64 {
	n := u.desc.Size
	if cs := u.m.opts.ChunkSize; cs > 0 {
		n = max(cs, u.up.MinChunk)
	}
	if u.chunkCap > 0 {
		n = min(n, u.chunkCap)
	}
	return n
}

// shrinkChunk halves the chunk after the registry refused one (starting
// from 64 MiB), down to the larger of 1 MiB and the registry's
// OCI-Chunk-Min-Length. It reports false when no smaller chunk is left.
func (u *chunkedUpload) shrinkChunk() bool {
	next := min(u.chunkLen()/2, maxShrunkChunk)
	if next < max(u.up.MinChunk, minShrunkChunk) {
		return false
	}
	u.chunkCap = next
	u.ev.note(fmt.Sprintf("registry refused a chunk; sending chunks of %s (Options.ChunkSize sets them from the start)", progress.FormatBytes(next)))
	return true
}

const (
	maxShrunkChunk = 64 << 20
	minShrunkChunk = 1 << 20
)

// errImpossibleOffset: the registry reported holding more bytes than the
// blob has. Nothing it says about this session can be trusted.
var errImpossibleOffset = errors.New("registry reports an upload offset beyond the blob's size")

// status asks the registry how many bytes the session holds.
func (u *chunkedUpload) status(ctx context.Context) (int64, error) {
	if u.noStatus {
		return 0, httpblob.ErrNoUploadStatus
	}
	n, err := u.up.Status(ctx)
	if err != nil {
		return 0, err
	}
	if n > u.desc.Size {
		return 0, fmt.Errorf("%w: %d bytes of %d", errImpossibleOffset, n, u.desc.Size)
	}
	return n, nil
}

// statusUnusable reports an answer about the session's offset that
// cannot be used: none (the registry has no status query, or answers it
// without a Range) or an impossible one.
func (u *chunkedUpload) statusUnusable(err error) bool {
	return errors.Is(err, httpblob.ErrNoUploadStatus) || errors.Is(err, errImpossibleOffset)
}

// newSession drops the current session after an unusable status answer;
// the next attempt opens a new one from byte 0.
func (u *chunkedUpload) newSession(ctx context.Context, cause error) {
	switch {
	case errors.Is(cause, errImpossibleOffset):
		u.ev.note("registry reported an upload offset beyond the blob's size; starting a new upload session from byte 0")
	case !u.noStatus:
		u.noStatus = true
		why := "no usable Range in its answer"
		var se *retrypolicy.StatusError
		if errors.As(cause, &se) {
			why = fmt.Sprintf("HTTP %d", se.StatusCode)
		}
		u.ev.note("registry cannot report an upload's offset (" + why + "); broken uploads restart in a new session from byte 0")
	}
	u.abandon(ctx)
}

func (u *chunkedUpload) attempt(ctx context.Context, ret *retrypolicy.Retrier) error {
	u.sent = 0
	if u.up == nil {
		up, err := u.start(ctx)
		if err != nil {
			return err
		}
		u.up, u.committed, u.stale, u.patched = up, 0, false, false
	}
	if u.stale {
		n, err := u.status(ctx)
		if err != nil {
			return err
		}
		u.committed, u.stale = n, false
	}
	if ret.Attempts() > 1 {
		u.ev.attemptStarts(u.committed)
	}
	mismatches := 0
	for u.committed < u.desc.Size {
		first := !u.patched
		u.patched = true
		from := u.committed
		err := u.patch(ctx, ret)
		// A body limit (413 from a proxy or the registry), or a 416 when
		// nothing was sent on the session yet (both sides are at 0, so it
		// refuses the chunk itself, not its offset: GHCR above 4 MiB):
		// smaller chunks.
		tooLarge := errors.Is(err, httpblob.ErrChunkTooLarge)
		if tooLarge || (errors.Is(err, httpblob.ErrOffsetMismatch) && first && u.committed == 0) {
			if !u.shrinkChunk() {
				return fmt.Errorf("%w: the registry refuses chunks of %d bytes: %w", httpblob.ErrChunkedUnsupported, u.chunkLen(), err)
			}
			if !tooLarge {
				u.patched = false
				continue
			}
			// What a 413'd PATCH left is the registry's to say.
			n, serr := u.status(ctx)
			if serr != nil {
				return serr
			}
			u.committed = n
			continue
		}
		if errors.Is(err, httpblob.ErrOffsetMismatch) && mismatches < 3 {
			// The registry's offset differs from ours; it may still be
			// recording a broken PATCH. Ask again, a moment later.
			mismatches++
			if serr := ctxsleep.Sleep(ctx, time.Duration(mismatches)*50*time.Millisecond); serr != nil {
				return serr
			}
			n, serr := u.status(ctx)
			if serr != nil {
				return serr
			}
			u.committed = n
			if n == from && n > 0 && mismatches >= 2 {
				// The registry refuses a PATCH at the very offset it
				// reports (Quay's status reads one byte more than it
				// holds): what it reports cannot be used.
				return fmt.Errorf("%w: a PATCH at the reported offset %d is refused: %w", httpblob.ErrNoUploadStatus, n, err)
			}
			if u.committed == 0 && mismatches >= 2 {
				// distribution reports "0-0" for an empty upload and for
				// one byte: a fresh session settles which it was.
				u.abandon(ctx)
				up, err := u.start(ctx)
				if err != nil {
					return err
				}
				u.up, u.patched = up, false
			}
			continue
		}
		if err != nil {
			u.stale = true
			if errors.Is(err, httpblob.ErrOffsetMismatch) {
				return retrypolicy.Transient(err)
			}
			return err
		}
		u.committed = u.up.Offset
	}
	// The registry verifies the digest before it answers: a silence the
	// request watchdog allows for longer (see reqwatch.go).
	return u.up.Commit(withPatience(ctx, u.m.commitPatience(u.desc.Size)), u.desc.Digest)
}

// patch streams one chunk from the source at the committed offset. The
// source is read through a healing reader with its own budget, so a broken
// download does not break the upload; the upload's own watchdog runs on
// the time the request spends waiting for the registry.
func (u *chunkedUpload) patch(ctx context.Context, ret *retrypolicy.Retrier) error {
	n := min(u.desc.Size-u.committed, u.chunkLen())
	var (
		moved   atomic.Int64
		busy    activeClock
		bodies  = newBodyTracker()
		mu      sync.Mutex
		readers []*healingReader
	)
	start := u.committed
	// open gives the chunk's bytes from the source. The transport reads
	// and closes each body on its own goroutine, possibly after Patch
	// returns; the WaitGroup tells when it is done with all of them.
	open := func() (io.ReadCloser, error) {
		inner, err := retrypolicy.NewRetrier(policy(u.m.opts, opFetch, u.ev), u.desc.Size)
		if err != nil {
			return nil, err
		}
		hr := newHealingReader(ctx, u.desc, u.m.src, inner, u.m.wd, u.ev, start)
		hr.moved, hr.busy, hr.end = &moved, &busy, start+n
		mu.Lock()
		readers = append(readers, hr)
		mu.Unlock()
		bodies.add()
		return &chunkBody{r: io.LimitReader(hr, n), hr: hr, done: bodies.done}, nil
	}
	first, err := open()
	if err != nil {
		return err
	}
	stop := watch(u.m.wd.patient(), &moved, idleClock(&busy), ret.Cancel)
	// open is also the request's GetBody: after a 401 (a token that
	// expired between chunks) the auth client sends the chunk again.
	err = u.up.Patch(ctx, first, n, open)
	stop()
	if !bodies.wait(time.Minute) {
		// net/http promises to close request bodies, even on errors;
		// should it not, do not read what its goroutine may still write.
		return fmt.Errorf("transport did not release the chunk body: %w", errors.Join(err, retrypolicy.ErrStalled))
	}

	mu.Lock()
	defer mu.Unlock()
	last := readers[len(readers)-1]
	u.sent += last.offset - start
	u.sentEnd = last.offset
	if err != nil {
		for _, hr := range readers {
			re, ok := hr.err.(*readerError)
			switch {
			case !ok:
			case ctx.Err() != nil:
				// The upload's attempt ended (its deadline, its
				// watchdog) and took the source with it: the upload's
				// loop decides, and names the cause.
				return fromSource(fmt.Errorf("reading source: %w", re.err))
			case errors.Is(re.err, content.ErrMismatchedDigest):
				// A corrupted source stream: the upload restarts
				// once from 0 (see uploadChunked).
				return fromSource(fmt.Errorf("reading source: %w", re.err))
			default:
				// The source failed as far as its own policy allows:
				// say so, and do not retry it again.
				return retrypolicy.Permanent(fromSource(fmt.Errorf("reading source: %w", re.err)))
			}
		}
		return err
	}
	if got := last.offset - start; got != n {
		return fmt.Errorf("source gave %d of %d bytes: %w", got, n, io.ErrUnexpectedEOF)
	}
	return nil
}

// chunkBody is one PATCH body; Close releases the source connection and
// tells patch the transport is done with it.
type chunkBody struct {
	r    io.Reader
	hr   *healingReader
	once sync.Once
	done func()
}

func (b *chunkBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *chunkBody) Close() error {
	b.once.Do(func() {
		b.hr.Close()
		b.done()
	})
	return nil
}

// settle learns the registry's offset after a failed attempt, before the
// next PATCH. A registry may still be receiving the broken PATCH when it is
// asked: bytes in flight when the link dropped, or held by a proxy, land a
// moment later, and distribution reports only what it has written so far
// (then takes a PATCH from there, and the late bytes are received twice).
// So an answer short of what the client streamed is taken only once it has
// not changed for settleQuiet; an answer equal to it at once. A PATCH from
// a stale offset costs the bytes in flight twice, or a 416 mid-body.
func (u *chunkedUpload) settle(ctx context.Context) (int64, error) {
	if u.up == nil {
		return u.committed, nil
	}
	if u.noStatus {
		// Nothing to ask: the session goes, a new one starts from 0.
		return 0, httpblob.ErrNoUploadStatus
	}
	if u.sent == 0 {
		return u.committed, nil
	}
	start, pause := time.Now(), settlePause
	prev, changed := int64(-1), start
	for {
		n, err := u.status(ctx)
		if err != nil {
			u.stale = true
			return u.committed, err
		}
		u.committed, u.stale = n, false
		now := time.Now()
		if n != prev {
			prev, changed = n, now
		}
		if n >= u.sentEnd || n == u.desc.Size || now.Sub(changed) >= settleQuiet || now.Sub(start) > settleMax {
			return n, nil
		}
		if ctxsleep.Sleep(ctx, pause) != nil {
			return n, nil
		}
		pause = min(2*pause, settleQuiet)
	}
}

// The offset after a cut is taken once it has been quiet for settleQuiet,
// asked at settlePause and then doubling pauses, for at most settleMax.
// settleQuiet is a cost per cut of a registry that holds less than the
// client sent (bytes lost in socket buffers, or still on their way).
const (
	settlePause = 25 * time.Millisecond
	settleQuiet = 150 * time.Millisecond
	settleMax   = 5 * time.Second
)

// abandon deletes the session, as a courtesy: a registry collects
// abandoned sessions anyway. It must not hold the caller: after a cancel
// it gets cancelGrace, otherwise cleanupGrace.
func (u *chunkedUpload) abandon(ctx context.Context) {
	if u.up != nil {
		grace := cleanupGrace
		if ctx.Err() != nil {
			grace = cancelGrace
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		// A cancel that arrives meanwhile shortens the wait to cancelGrace.
		var timer atomic.Pointer[time.Timer]
		stopAfter := context.AfterFunc(ctx, func() { timer.Store(time.AfterFunc(cancelGrace, cancel)) })
		u.up.Cancel(cctx)
		u.ps.forget()
		stopAfter()
		if t := timer.Load(); t != nil {
			t.Stop()
		}
		cancel()
	}
	u.up, u.committed, u.stale = nil, 0, false
}

// How long an upload session's DELETE may take: the caller who cancelled
// gets control back within a fraction of a second whatever the registry
// does.
const (
	cancelGrace  = 300 * time.Millisecond
	cleanupGrace = 2 * time.Second
)

// sessionGone reports a 404 BLOB_UPLOAD_UNKNOWN on the session's URL.
func (u *chunkedUpload) sessionGone(err error) bool {
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != http.StatusNotFound {
		return false
	}
	for _, e := range er.Errors {
		if e.Code == errcode.ErrorCodeBlobUploadUnknown {
			return true
		}
	}
	return false
}

// digestRejected reports a registry's 400 DIGEST_INVALID or SIZE_INVALID
// to the request that completes an upload.
func digestRejected(err error) bool {
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		if er.StatusCode != http.StatusBadRequest {
			return false
		}
		for _, e := range er.Errors {
			if e.Code == errcode.ErrorCodeDigestInvalid || e.Code == errcode.ErrorCodeSizeInvalid {
				return true
			}
		}
	}
	return false
}

// bodyTracker counts the request bodies the transport has not closed yet,
// and is waited on with a timeout without a goroutine left behind.
type bodyTracker struct {
	mu   sync.Mutex
	open int
	idle chan struct{} // closed while open == 0
}

func newBodyTracker() *bodyTracker {
	idle := make(chan struct{})
	close(idle)
	return &bodyTracker{idle: idle}
}

func (b *bodyTracker) add() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open == 0 {
		b.idle = make(chan struct{})
	}
	b.open++
}

func (b *bodyTracker) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open--
	if b.open == 0 {
		close(b.idle)
	}
}

// wait reports whether every body was closed within d. Bodies are opened
// only while the request runs, so none appears once wait is called.
func (b *bodyTracker) wait(d time.Duration) bool {
	b.mu.Lock()
	idle := b.idle
	b.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

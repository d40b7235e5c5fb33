package transfer

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Progressed events go out when at least progressBytes and progressEvery
// have passed since the last one, and at the end: a 10 GB/s link or a
// 10k-blob copy does not spend its time in callbacks.
const (
	progressBytes = 1 << 20
	progressEvery = 100 * time.Millisecond
)

// blobEvents emits the events of one blob. Its lock keeps them in order and
// never concurrent, even when net/http's writer goroutine reports the bytes
// of a request body while the blob's goroutine reports a response.
type blobEvents struct {
	mu      sync.Mutex
	obs     progress.Observer
	desc    ocispec.Descriptor
	attempt int
	// wire is the bytes moved for this blob so far, every attempt
	// counted. Atomic: every connection of a parallel read adds to it on
	// each read, and needs no lock for that.
	wire atomic.Int64
	// source names the source now serving the blob, and sources counts
	// the bytes each served, when the copy has mirrors.
	source  string
	sources map[string]int64

	lastOffset int64
	lastAt     time.Time
}

func newBlobEvents(obs progress.Observer, desc ocispec.Descriptor) *blobEvents {
	return &blobEvents{obs: obs, desc: desc, attempt: 1}
}

// emit sends e. Errors in events are redacted like returned errors: an
// observer that logs them must not print upload state or signatures.
func (b *blobEvents) emit(e progress.Event) {
	if b.obs == nil {
		return
	}
	e.Desc = b.desc
	if e.Attempt == 0 {
		e.Attempt = b.attempt
	}
	e.Wire = b.wire.Load()
	if e.Source == "" {
		e.Source = b.source
	}
	e.Time = time.Now()
	b.obs.OnEvent(e)
}

func (b *blobEvents) started(offset int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastOffset, b.lastAt = offset, time.Now()
	b.emit(progress.Event{Kind: progress.Started, Offset: offset})
}

// moved records n bytes read at the new offset and emits a throttled
// Progressed event.
func (b *blobEvents) moved(n, offset int64) {
	b.wire.Add(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.progressLocked(offset)
}

func (b *blobEvents) progressLocked(offset int64) {
	if b.obs == nil {
		return
	}
	if offset < b.desc.Size && (offset-b.lastOffset < progressBytes || time.Since(b.lastAt) < progressEvery) {
		return
	}
	b.lastOffset, b.lastAt = offset, time.Now()
	b.emit(progress.Event{Kind: progress.Progressed, Offset: offset})
}

// progressed emits a throttled Progressed event at offset, for bytes whose
// wire was counted when they arrived (onWire).
func (b *blobEvents) progressed(offset int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.progressLocked(offset)
}

// onWire counts n bytes that crossed the wire, not yet progress (a range
// fetched ahead of the offset).
func (b *blobEvents) onWire(n int64) {
	if b != nil {
		b.wire.Add(n)
	}
}

// rangeResumed reports that one range continues at offset.
func (b *blobEvents) rangeResumed(r progress.Range, offset int64, attempt int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emit(progress.Event{Kind: progress.Resumed, Offset: offset, Range: r, Attempt: attempt})
}

// retrying reports a retry of ri.Op, of the whole blob or, when r is not
// zero, of one range of a blob fetched over several connections. Only a
// retry of the blob's bytes (fetch or push, the whole blob) moves the
// blob's attempt count: a retried HEAD or one range is not an attempt at
// the blob.
func (b *blobEvents) retrying(ri retrypolicy.RetryInfo, r progress.Range) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emit(progress.Event{Kind: progress.Retrying, Op: ri.Op, Attempt: ri.Attempt, Offset: ri.Offset, Range: r, Reason: ri.Reason, Backoff: ri.Backoff, Err: redacted(ri.Err)})
	if r.IsZero() && (ri.Op == opFetch || ri.Op == opPush) {
		b.attempt = ri.Attempt + 1
	}
}

// attemptStarts emits Resumed for an attempt that continues at offset > 0,
// and resets the throttle so the bar moves at once.
func (b *blobEvents) attemptStarts(offset int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastOffset, b.lastAt = offset, time.Now()
	if offset > 0 {
		b.emit(progress.Event{Kind: progress.Resumed, Offset: offset})
	}
}

func (b *blobEvents) note(reason string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emit(progress.Event{Kind: progress.Note, Reason: reason})
}

func (b *blobEvents) completed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := progress.Event{Kind: progress.Completed, Offset: b.desc.Size}
	if len(b.sources) > 0 {
		e.Sources = maps.Clone(b.sources)
	}
	b.emit(e)
}

// using records that the blob's bytes now come from the named source.
func (b *blobEvents) using(name string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.source = name
}

// served counts n bytes read from the named source.
func (b *blobEvents) served(name string, n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sources == nil {
		b.sources = map[string]int64{}
	}
	b.sources[name] += n
}

func (b *blobEvents) skipped(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emit(progress.Event{Kind: progress.Skipped, Offset: b.desc.Size, Reason: reason})
}

func (b *blobEvents) mounted(from string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emit(progress.Event{Kind: progress.Mounted, Offset: b.desc.Size, Reason: "from " + from})
}

func (b *blobEvents) failed(reason string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emit(progress.Event{Kind: progress.Failed, Reason: reason, Err: redacted(err)})
}

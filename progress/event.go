package progress

import (
	"strconv"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Kind says what happened to a blob.
//
// The zero Kind is not a valid kind: an Event whose Kind was never set is
// recognisably broken, and observers in this package ignore it.
type Kind int

const (
	// Started: the first attempt on the blob begins. Once per blob per copy.
	Started Kind = iota + 1
	// Progressed: more of the blob is committed; Offset says how much.
	Progressed
	// Retrying: an attempt failed with a retryable error; Backoff is slept
	// before the next attempt. Reason and Err say why.
	Retrying
	// Resumed: the new attempt continues from Offset instead of from 0.
	// An attempt that restarts from 0 emits no Resumed.
	Resumed
	// Skipped: the destination already had the blob; nothing moved.
	Skipped
	// Mounted: the registry mounted the blob from another repository;
	// nothing moved.
	Mounted
	// Completed: the blob is in the destination, digest and size verified.
	Completed
	// Failed: the blob gave up, with a permanent error or out of attempts.
	Failed
	// Note: something worth telling a human that changes no state, such as
	// "registry refused chunked upload; falling back to monolithic".
	// Desc may be zero when the note concerns no single blob.
	Note
)

var kindNames = [...]string{
	Started:    "started",
	Progressed: "progressed",
	Retrying:   "retrying",
	Resumed:    "resumed",
	Skipped:    "skipped",
	Mounted:    "mounted",
	Completed:  "completed",
	Failed:     "failed",
	Note:       "note",
}

// String returns the lowercase name of k, or "kind(N)" for an invalid kind.
func (k Kind) String() string {
	if k.valid() {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

func (k Kind) valid() bool { return k >= Started && k <= Note }

// Event is one thing that happened to one blob (or manifest) during a
// transfer. Fields that do not apply to a Kind are zero.
type Event struct {
	Kind Kind
	// Desc is the blob or manifest concerned.
	Desc ocispec.Descriptor
	// Offset is the number of payload bytes of Desc committed or verified so
	// far. For Resumed it is the offset the new attempt continues from; for
	// Completed it is Desc.Size.
	Offset int64
	// Wire is the number of bytes this blob has moved over the wire so far,
	// across all attempts, counting bytes sent again after a restart. Wire
	// divided by Desc.Size is the re-send overhead. Zero when the emitter
	// does not count. sturdy counts what it read from a network source and
	// what it handed to an upload's connection: when a connection is
	// reset, the bytes still in socket buffers (up to a few MiB on a fast
	// link) count although the registry never kept them.
	Wire int64
	// Attempt is the 1-based attempt the event belongs to.
	Attempt int
	// Reason is a short human reason: "connection reset" or "HTTP 503" for
	// Retrying and Failed, "exists" for Skipped, "from repo X" for Mounted,
	// the message itself for Note.
	Reason string
	// Op is, for Retrying, the operation whose attempt failed, when the
	// emitter says: sturdy's are "resolve", "exists", "mount", "fetch",
	// "push", "tag", "predecessors" and "delete". Retries of a manifest
	// HEAD or of a tag are reported too, not only a blob's bytes; one that
	// concerns no descriptor yet (a tag's resolution) has a zero Desc.
	Op string
	// Range is, for Retrying and Resumed, the range of the blob whose
	// connection failed or continues, when the blob is fetched over
	// several connections (see transfer.Options.PullConnections); zero
	// otherwise. Such an event concerns that range only: Offset is where
	// the range stands (an absolute offset in the blob), Attempt counts
	// the range's attempts, and the blob's committed offset is still the
	// one its last Progressed reported.
	Range Range
	// Source names, when the copy reads from mirrors, the source serving
	// the blob's bytes at the time of the event ("origin", or the mirror's
	// name); for a Note about a mirror, that mirror. Empty otherwise.
	Source string
	// Sources is, for Completed when the copy reads from mirrors, the
	// bytes each source served for the blob (wire bytes: a resumed or
	// repeated read counts again). Nil otherwise.
	Sources map[string]int64
	// Reused is, for a Resumed that continues from state an earlier
	// process kept (transfer.Options.StateDir), the bytes that did not
	// cross the wire again: a pull's bytes kept on disk, or what the
	// registry held of an upload session. Zero otherwise: a resume within
	// one process is told by Offset alone.
	Reused int64
	// Backoff is, for Retrying, the wait slept before the next attempt.
	Backoff time.Duration
	// Err is, for Retrying and Failed, the cause.
	Err error
	// Time is when the event happened, set by the emitter. The zero Time
	// means "now" to the Tracker.
	Time time.Time
}

// Range is the byte range [Start, End) of a blob. The zero Range means
// "the whole blob, over one connection".
type Range struct {
	Start, End int64
}

// IsZero reports whether r is the zero Range.
func (r Range) IsZero() bool { return r == Range{} }

// String returns "bytes a-b" (both ends included), as in HTTP.
func (r Range) String() string {
	return "bytes " + strconv.FormatInt(r.Start, 10) + "-" + strconv.FormatInt(r.End-1, 10)
}

// Observer receives transfer events. See the package documentation for the
// concurrency contract every implementation must honour.
type Observer interface {
	OnEvent(Event)
}

// Func adapts an ordinary function to an Observer. A nil Func ignores
// events.
type Func func(Event)

// OnEvent calls f(e).
func (f Func) OnEvent(e Event) {
	if f != nil {
		f(e)
	}
}

// Multi returns an Observer that passes each event to every observer, in
// the order given. Nil observers are skipped; with none left, Multi returns
// an Observer that ignores events. An observer that blocks delays the ones
// after it, so keep each one quick.
func Multi(observers ...Observer) Observer {
	var all multi
	for _, o := range observers {
		switch o := o.(type) {
		case nil:
		case multi:
			all = append(all, o...)
		default:
			all = append(all, o)
		}
	}
	switch len(all) {
	case 0:
		return nop{}
	case 1:
		return all[0]
	}
	return all
}

// multi is never mutated after Multi returns it, so sharing it across
// goroutines and flattening it into another multi are both safe.
type multi []Observer

func (m multi) OnEvent(e Event) {
	for _, o := range m {
		o.OnEvent(e)
	}
}

type nop struct{}

func (nop) OnEvent(Event) {}

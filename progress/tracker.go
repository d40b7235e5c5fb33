package progress

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// State is where a blob stands, as far as the events seen so far tell.
type State int

const (
	// StatePending: the blob is known (from a Note) but not started.
	StatePending State = iota
	// StateActive: an attempt is moving bytes.
	StateActive
	// StateRetrying: an attempt failed; the next one has not yet reported.
	StateRetrying
	// StateDone: the blob completed.
	StateDone
	// StateSkipped: the destination already had the blob.
	StateSkipped
	// StateMounted: the blob was mounted from another repository.
	StateMounted
	// StateFailed: the blob failed for good.
	StateFailed
)

var stateNames = [...]string{
	StatePending:  "pending",
	StateActive:   "active",
	StateRetrying: "retrying",
	StateDone:     "done",
	StateSkipped:  "skipped",
	StateMounted:  "mounted",
	StateFailed:   "failed",
}

// String returns the lowercase name of s, or "state(N)" for an invalid
// state.
func (s State) String() string {
	if s >= StatePending && s <= StateFailed {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// terminal reports whether no further bytes are expected for the blob.
func (s State) terminal() bool { return s >= StateDone }

// BlobState is what a Tracker knows about one blob.
type BlobState struct {
	// Desc is the descriptor from the first event that named the blob.
	Desc  ocispec.Descriptor
	State State
	// Offset is the committed offset most recently reported. It goes down
	// when an attempt restarts from 0: it tells what is committed, not what
	// was sent. Completed, skipped and mounted blobs stand at Desc.Size.
	Offset int64
	// Wire is the bytes this blob moved over the wire, across all attempts.
	// Where the emitter reports Event.Wire the larger of that and the
	// observed forward progress is used, so Wire is never below the payload
	// that provably crossed. Skipped and mounted blobs move nothing.
	Wire int64
	// Sources is the bytes each source served for the blob, from its
	// Completed event, when the copy read from mirrors; nil otherwise.
	Sources map[string]int64
	// Reused is the bytes that did not cross the wire again because an
	// earlier process kept them (Event.Reused, the largest reported).
	Reused   int64
	Attempts int // highest attempt number seen
	Retries  int // Retrying events
	Resumes  int // Resumed events
	// Reason and Err are the most recent ones reported by Retrying, Failed,
	// Skipped or Mounted. After a retry that later succeeded they still say
	// what went wrong, which is what a person asks.
	Reason string
	Err    error
	// First and Last are the times of the first and the latest event.
	First, Last time.Time
}

// Snapshot is a consistent copy of a Tracker's state. It shares no memory
// with the Tracker or with other snapshots.
type Snapshot struct {
	// Blobs in the order they were first seen.
	Blobs []BlobState
	// Total is the sum of the sizes of every blob seen. A blob counts as
	// soon as its first event arrives, so Total grows while a graph copy
	// discovers blobs.
	Total int64
	// Done is the sum of the blobs' Offset: completed, skipped and mounted
	// blobs count in full. It can go down when an attempt restarts from 0;
	// the re-sent bytes show up in Wire instead.
	Done int64
	// Wire is the sum of the blobs' Wire.
	Wire int64
	// Reused is the sum of the blobs' Reused.
	Reused int64
	// Retries and Resumes count Retrying and Resumed events over all blobs.
	Retries, Resumes int
	// Backoff is the sum of the Backoff of every Retrying event.
	Backoff time.Duration
	// Rate is the smoothed payload rate in bytes per second: an
	// exponentially weighted moving average of committed-offset growth with
	// a time constant of about 5 s, over event times. It decays towards 0
	// while nothing is reported, so a stall shows as a falling rate rather
	// than the last good one. Skipped and mounted blobs do not count.
	Rate float64
	// Notes are the distinct Note reasons, first seen first, at most 16.
	Notes []string
	// Sources sums the blobs' Sources: the bytes each source served, when
	// the copy read from mirrors; nil otherwise.
	Sources map[string]int64
	// First and Last are the times of the first and the latest event.
	First, Last time.Time
}

// Count returns how many blobs are in state s.
func (s Snapshot) Count(state State) int {
	n := 0
	for _, b := range s.Blobs {
		if b.State == state {
			n++
		}
	}
	return n
}

// ETA estimates the time to move the rest of the blobs seen so far at the
// current Rate. ok is false while there is nothing to estimate from: no
// blobs, or bytes left and no rate.
func (s Snapshot) ETA() (eta time.Duration, ok bool) {
	if len(s.Blobs) == 0 {
		return 0, false
	}
	var remaining int64
	for _, b := range s.Blobs {
		if !b.State.terminal() && b.Desc.Size > b.Offset {
			remaining += b.Desc.Size - b.Offset
		}
	}
	if remaining == 0 {
		return 0, true
	}
	if !(s.Rate > 0) {
		return 0, false
	}
	secs := float64(remaining) / s.Rate
	if secs >= float64(math.MaxInt64)/float64(time.Second) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(secs * float64(time.Second)), true
}

// Summary condenses the snapshot into what a program prints at the end.
func (s Snapshot) Summary() Summary {
	sum := Summary{
		Blobs:   len(s.Blobs),
		Wire:    s.Wire,
		Reused:  s.Reused,
		Retries: s.Retries,
		Resumes: s.Resumes,
		Backoff: s.Backoff,
		Notes:   slices.Clone(s.Notes),
		Sources: maps.Clone(s.Sources),
	}
	if s.Last.After(s.First) {
		sum.Elapsed = s.Last.Sub(s.First)
	}
	for _, b := range s.Blobs {
		switch b.State {
		case StateDone:
			sum.Completed++
		case StateSkipped:
			sum.Skipped++
		case StateMounted:
			sum.Mounted++
		case StateFailed:
			sum.Failed++
			sum.Failures = append(sum.Failures, b)
		}
		if b.State != StateSkipped && b.State != StateMounted {
			sum.Payload += b.Offset
		}
	}
	return sum
}

// Summary is the end-of-run account of a transfer.
type Summary struct {
	// Blobs counts every node seen: layers, configs and manifests alike;
	// the ones not completed, skipped, mounted or failed were still in
	// flight when the summary was taken.
	Blobs, Completed, Skipped, Mounted, Failed int
	// Payload is the committed bytes of the blobs that were transferred
	// (not skipped or mounted). Wire is what it took on the wire.
	Payload, Wire int64
	// Reused is the payload that did not cross the wire in this run because
	// an earlier process kept it (a pull's kept bytes, an upload session's
	// bytes on the registry): Payload - Reused is what this run had to move.
	Reused int64
	// Retries and Resumes count Retrying and Resumed events; Backoff is the
	// total time those retries waited.
	Retries, Resumes int
	Backoff          time.Duration
	// Elapsed runs from the first to the latest event.
	Elapsed time.Duration
	// Failures lists the failed blobs, first seen first.
	Failures []BlobState
	// Notes are the distinct Note reasons.
	Notes []string
	// Sources is the bytes each source served (see Snapshot.Sources): how
	// much a mirror saved the origin.
	Sources map[string]int64
}

// Overhead returns Wire / Payload: 1 when every byte crossed once, 2 when
// the transfer sent everything twice. It returns 0 when nothing moved.
func (s Summary) Overhead() float64 {
	if s.Payload <= 0 {
		return 0
	}
	return float64(s.Wire) / float64(s.Payload)
}

// Rate returns the average payload rate over Elapsed, in bytes per second.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Payload) / s.Elapsed.Seconds()
}

// String renders the summary on a few labelled lines, without a trailing
// newline, e.g.
//
//	blobs    4 total, manifests and configs included: 1 completed, 1 skipped, 1 mounted, 1 failed
//	bytes    1.0 GiB payload, 1.2 GiB on the wire (1.20x)[, 256 MiB reused from kept state]
//	retries  3 (waited 15s), 1 resumed
//	time     1m2s, 16.5 MiB/s average
//	failed   sha256:… (10.0 MiB): HTTP 403
//	sources  mirror.local:5000 1.1 GiB, origin 96.0 MiB
//	note     registry refused chunked upload; falling back to monolithic
func (s Summary) String() string {
	var b strings.Builder
	b.WriteString("blobs    ")
	b.WriteString(strconv.Itoa(s.Blobs))
	b.WriteString(" total, manifests and configs included: ")
	b.WriteString(strconv.Itoa(s.Completed))
	b.WriteString(" completed, ")
	b.WriteString(strconv.Itoa(s.Skipped))
	b.WriteString(" skipped, ")
	b.WriteString(strconv.Itoa(s.Mounted))
	b.WriteString(" mounted, ")
	b.WriteString(strconv.Itoa(s.Failed))
	b.WriteString(" failed")
	if open := s.Blobs - s.Completed - s.Skipped - s.Mounted - s.Failed; open > 0 {
		b.WriteString(", ")
		b.WriteString(strconv.Itoa(open))
		b.WriteString(" unfinished")
	}

	b.WriteString("\nbytes    ")
	b.WriteString(FormatBytes(s.Payload))
	b.WriteString(" payload, ")
	b.WriteString(FormatBytes(s.Wire))
	b.WriteString(" on the wire")
	if s.Payload > 0 {
		b.WriteString(" (")
		b.WriteString(strconv.FormatFloat(s.Overhead(), 'f', 2, 64))
		b.WriteString("x)")
	}
	if s.Reused > 0 {
		b.WriteString(", ")
		b.WriteString(FormatBytes(s.Reused))
		b.WriteString(" reused from kept state")
	}

	b.WriteString("\nretries  ")
	b.WriteString(strconv.Itoa(s.Retries))
	if s.Backoff > 0 {
		b.WriteString(" (waited ")
		b.WriteString(FormatDuration(s.Backoff))
		b.WriteString(")")
	}
	b.WriteString(", ")
	b.WriteString(strconv.Itoa(s.Resumes))
	b.WriteString(" resumed")

	b.WriteString("\ntime     ")
	b.WriteString(FormatDuration(s.Elapsed))
	if s.Elapsed > 0 {
		b.WriteString(", ")
		b.WriteString(FormatRate(s.Rate()))
		b.WriteString(" average")
	}

	for _, f := range s.Failures {
		b.WriteString("\nfailed   ")
		b.WriteString(string(f.Desc.Digest))
		b.WriteString(" (")
		b.WriteString(FormatBytes(f.Desc.Size))
		b.WriteString(")")
		reason := f.Reason
		if reason == "" && f.Err != nil {
			reason = f.Err.Error()
		}
		if reason != "" {
			b.WriteString(": ")
			b.WriteString(reason)
		}
	}
	if len(s.Sources) > 0 {
		b.WriteString("\nsources  ")
		names := slices.Sorted(maps.Keys(s.Sources))
		for i, n := range names {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(n + " " + FormatBytes(s.Sources[n]))
		}
	}
	for _, n := range s.Notes {
		b.WriteString("\nnote     ")
		b.WriteString(n)
	}
	return b.String()
}

const (
	// rateTau is the EWMA time constant: long enough to ride out the
	// burstiness of chunked uploads, short enough to show a stall within
	// seconds.
	rateTau = 5 * time.Second
	// rateMinSample keeps a burst of events from many blobs from turning
	// into tiny, noisy samples.
	rateMinSample = 250 * time.Millisecond
	// maxNotes bounds memory when a note repeats with varying text.
	maxNotes = 16
)

// Tracker is an Observer that aggregates events into per-blob and total
// state for a progress display and an end-of-run Summary. The zero value is
// ready to use; a Tracker must not be copied after first use.
//
// Offsets are taken from Started, Progressed, Resumed and Completed.
// Retrying and Failed keep the last one reported: the bytes committed before
// a failure are still committed until an attempt says otherwise.
//
// One Tracker is meant for one Copy (or one program run). A blob that is
// Started again after it finished is counted once in Total; its Wire keeps
// accumulating across both rounds.
type Tracker struct {
	// now is the clock for events without a Time and for the rate decay in
	// Snapshot; nil means time.Now. Tests set it.
	now func() time.Time

	mu      sync.Mutex
	blobs   map[digest.Digest]*blob
	order   []*blob
	notes   []string
	retries int
	resumes int
	backoff time.Duration
	first   time.Time
	last    time.Time

	// Rate state: progress is the monotone sum of forward committed-offset
	// movement; rateAt and rateProgress mark the last sample.
	progress     int64
	rateAt       time.Time
	rateProgress int64
	rate         float64
	haveRate     bool
}

type blob struct {
	state BlobState
	// wireBase is Wire carried over from earlier rounds of the same digest.
	wireBase int64
	// reportedWire is the largest Event.Wire of this round.
	reportedWire int64
	// moved is the forward progress observed this round: what must have
	// crossed the wire even when the emitter reports no Wire.
	moved int64
	// fresh is set between a Retrying and the next attempt's first report:
	// unless that attempt says Resumed, it starts from 0.
	fresh bool
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker { return &Tracker{} }

func (t *Tracker) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

// OnEvent implements Observer. It is safe for concurrent use.
func (t *Tracker) OnEvent(e Event) {
	if t == nil || !e.Kind.valid() {
		return
	}
	at := e.Time
	if at.IsZero() {
		at = t.clock()
	}

	t.mu.Lock()
	defer t.mu.Unlock()

	if t.first.IsZero() || at.Before(t.first) {
		t.first = at
	}
	if at.After(t.last) {
		t.last = at
	}
	if t.rateAt.IsZero() {
		t.rateAt = at
	}

	if e.Kind == Note && e.Reason != "" {
		t.addNote(e.Reason)
	}
	if e.Desc.Digest == "" {
		return // nothing to attach the event to
	}
	b := t.blob(e.Desc, at)
	if e.Attempt > b.state.Attempts && e.Range.IsZero() {
		// A range's attempts are not the blob's.
		b.state.Attempts = e.Attempt
	}
	if e.Wire > b.reportedWire {
		b.reportedWire = e.Wire
	}
	if at.After(b.state.Last) {
		b.state.Last = at
	}

	if !e.Range.IsZero() && (e.Kind == Retrying || e.Kind == Resumed) {
		// One connection of a blob fetched over several: counted, but
		// the blob goes on at its own offset.
		t.rangeEvent(b, e)
		b.state.Wire = b.wire()
		t.sampleRate(at)
		return
	}
	switch e.Kind {
	case Started:
		if b.state.State != StatePending {
			// A new round for a digest seen before: keep what the earlier
			// round sent, start counting afresh.
			b.wireBase = b.wire()
			b.reportedWire = max(e.Wire, 0)
			b.moved = 0
		}
		b.fresh = false
		b.state.State = StateActive
		b.state.Offset = max(e.Offset, 0)
	case Progressed:
		if !b.state.State.terminal() {
			b.state.State = StateActive
		}
		t.advance(b, e.Offset)
	case Resumed:
		t.resumes++
		b.state.Resumes++
		b.state.Reused = max(b.state.Reused, e.Reused)
		b.state.State = StateActive
		// Bytes below the resume offset were committed by earlier attempts
		// and do not cross the wire again.
		b.state.Offset = max(e.Offset, 0)
		b.fresh = false
		t.setReason(b, e)
	case Retrying:
		t.retries++
		t.backoff += max(e.Backoff, 0)
		b.state.Retries++
		b.state.State = StateRetrying
		b.fresh = true
		t.setReason(b, e)
	case Skipped, Mounted:
		if b.state.State == StateDone {
			break // a later "exists" does not undo a completed transfer
		}
		b.state.State = StateSkipped
		if e.Kind == Mounted {
			b.state.State = StateMounted
		}
		b.state.Offset = b.state.Desc.Size
		t.setReason(b, e)
	case Completed:
		if e.Sources != nil {
			b.state.Sources = maps.Clone(e.Sources)
		}
		b.state.State = StateDone
		size := b.state.Desc.Size
		if size == 0 {
			size = e.Offset // a descriptor without size: trust the emitter
		}
		t.advance(b, size)
	case Failed:
		b.state.State = StateFailed
		t.setReason(b, e)
	}
	b.state.Wire = b.wire()
	t.sampleRate(at)
}

// rangeEvent counts a Retrying or Resumed of one range of b.
func (t *Tracker) rangeEvent(b *blob, e Event) {
	if e.Kind == Resumed {
		t.resumes++
		b.state.Resumes++
	} else {
		t.retries++
		t.backoff += max(e.Backoff, 0)
		b.state.Retries++
	}
	t.setReason(b, e)
}

// blob returns the entry for desc's digest, creating it on first sight.
func (t *Tracker) blob(desc ocispec.Descriptor, at time.Time) *blob {
	if t.blobs == nil {
		t.blobs = make(map[digest.Digest]*blob)
	}
	b := t.blobs[desc.Digest]
	if b == nil {
		b = &blob{state: BlobState{Desc: cloneDescriptor(desc), First: at, Last: at}}
		t.blobs[desc.Digest] = b
		t.order = append(t.order, b)
	} else if b.state.Desc.Size == 0 && desc.Size != 0 {
		// First seen through an event that did not carry the descriptor.
		b.state.Desc = cloneDescriptor(desc)
	}
	return b
}

// advance moves b to the committed offset off. An attempt after a retry
// that did not say Resumed restarted from 0, and so did one whose offset
// went down: then all of off is new movement.
func (t *Tracker) advance(b *blob, off int64) {
	off = max(off, 0)
	delta := off - b.state.Offset
	if b.fresh || delta < 0 {
		delta = off
	}
	b.fresh = false
	b.moved += delta
	t.progress += delta
	b.state.Offset = off
}

func (t *Tracker) setReason(b *blob, e Event) {
	if e.Reason != "" {
		b.state.Reason = e.Reason
	}
	if e.Err != nil {
		b.state.Err = e.Err
	}
}

func (t *Tracker) addNote(n string) {
	if len(t.notes) < maxNotes && !slices.Contains(t.notes, n) {
		t.notes = append(t.notes, n)
	}
}

func (b *blob) wire() int64 {
	if b.state.State == StateSkipped || b.state.State == StateMounted {
		return b.wireBase
	}
	return b.wireBase + max(b.reportedWire, b.moved)
}

// sampleRate folds the progress since the last sample into the EWMA. The
// weight depends on the time elapsed, not on the number of samples, so the
// rate does not depend on how often events arrive.
func (t *Tracker) sampleRate(at time.Time) {
	dt := at.Sub(t.rateAt)
	if dt < rateMinSample {
		return // also covers events arriving slightly out of time order
	}
	t.rate = t.projectRate(at)
	t.haveRate = true
	t.rateAt = at
	t.rateProgress = t.progress
}

// projectRate is the EWMA as it would stand at time at.
func (t *Tracker) projectRate(at time.Time) float64 {
	dt := at.Sub(t.rateAt)
	if dt <= 0 || t.rateAt.IsZero() {
		return t.rate
	}
	inst := float64(t.progress-t.rateProgress) / dt.Seconds()
	if !t.haveRate {
		return inst
	}
	alpha := 1 - math.Exp(-dt.Seconds()/rateTau.Seconds())
	return t.rate + alpha*(inst-t.rate)
}

// Snapshot returns a copy of the current state. It is safe to call while
// events arrive, from any goroutine.
func (t *Tracker) Snapshot() Snapshot {
	if t == nil {
		return Snapshot{}
	}
	now := t.clock()

	t.mu.Lock()
	defer t.mu.Unlock()

	s := Snapshot{
		Blobs:   make([]BlobState, 0, len(t.order)),
		Retries: t.retries,
		Resumes: t.resumes,
		Backoff: t.backoff,
		Rate:    t.rate,
		Notes:   slices.Clone(t.notes),
		First:   t.first,
		Last:    t.last,
	}
	// Between events the rate would otherwise freeze at its last value; a
	// stalled transfer must show as slowing down.
	if now.Sub(t.rateAt) >= rateMinSample {
		s.Rate = t.projectRate(now)
	}
	for _, b := range t.order {
		st := b.state
		st.Desc = cloneDescriptor(st.Desc)
		s.Blobs = append(s.Blobs, st)
		s.Total += st.Desc.Size
		s.Done += st.Offset
		s.Wire += st.Wire
		s.Reused += st.Reused
		if st.Sources != nil {
			st.Sources = maps.Clone(st.Sources)
			s.Blobs[len(s.Blobs)-1].Sources = st.Sources
			if s.Sources == nil {
				s.Sources = map[string]int64{}
			}
			for n, v := range st.Sources {
				s.Sources[n] += v
			}
		}
	}
	return s
}

// Summary is Snapshot().Summary(): call it when the transfer has returned.
func (t *Tracker) Summary() Summary {
	return t.Snapshot().Summary()
}

// cloneDescriptor deep-copies d so a snapshot can be modified by its owner
// without reaching into the Tracker or the emitter.
func cloneDescriptor(d ocispec.Descriptor) ocispec.Descriptor {
	d.URLs = slices.Clone(d.URLs)
	d.Annotations = maps.Clone(d.Annotations)
	d.Data = slices.Clone(d.Data)
	if d.Platform != nil {
		p := *d.Platform
		p.OSFeatures = slices.Clone(p.OSFeatures)
		d.Platform = &p
	}
	return d
}

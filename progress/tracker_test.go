package progress

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const mib = 1 << 20

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func desc(name string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString(name), Size: size}
}

func feed(tr *Tracker, events ...Event) {
	for _, e := range events {
		tr.OnEvent(e)
	}
}

func TestTrackerAggregation(t *testing.T) {
	a := desc("a", 10*mib)
	b := desc("b", 4*mib)
	errReset := errors.New("read: connection reset by peer")
	errDenied := errors.New("denied: requested access to the resource is denied")

	type want struct {
		state            State
		offset, wire     int64
		attempts         int
		retries, resumes int
		reason           string
	}
	tests := []struct {
		name    string
		events  []Event
		blobs   []want // in first-seen order
		total   int64
		done    int64
		payload int64 // Summary().Payload
		notes   []string
	}{
		{
			name: "clean transfer, wire inferred from progress",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1, Time: sec(0)},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 4 * mib, Time: sec(1)},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 8 * mib, Time: sec(2)},
				{Kind: Completed, Desc: a, Attempt: 1, Offset: 10 * mib, Time: sec(3)},
			},
			blobs: []want{{state: StateDone, offset: 10 * mib, wire: 10 * mib, attempts: 1}},
			total: 10 * mib, done: 10 * mib, payload: 10 * mib,
		},
		{
			name: "retry then resume moves each byte once",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1, Time: sec(0)},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 4 * mib, Time: sec(1)},
				{Kind: Retrying, Desc: a, Attempt: 1, Reason: "connection reset", Err: errReset, Backoff: time.Second, Time: sec(2)},
				{Kind: Resumed, Desc: a, Attempt: 2, Offset: 4 * mib, Time: sec(3)},
				{Kind: Progressed, Desc: a, Attempt: 2, Offset: 8 * mib, Time: sec(4)},
				{Kind: Completed, Desc: a, Attempt: 2, Offset: 10 * mib, Time: sec(5)},
			},
			blobs: []want{{state: StateDone, offset: 10 * mib, wire: 10 * mib, attempts: 2, retries: 1, resumes: 1, reason: "connection reset"}},
			total: 10 * mib, done: 10 * mib, payload: 10 * mib,
		},
		{
			name: "resume from a lower offset than last reported",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 6 * mib},
				{Kind: Retrying, Desc: a, Attempt: 1},
				{Kind: Resumed, Desc: a, Attempt: 2, Offset: 5 * mib},
				{Kind: Completed, Desc: a, Attempt: 2},
			},
			blobs: []want{{state: StateDone, offset: 10 * mib, wire: 11 * mib, attempts: 2, retries: 1, resumes: 1}},
			total: 10 * mib, done: 10 * mib, payload: 10 * mib,
		},
		{
			name: "restart from 0: done goes down, wire counts both",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 6 * mib},
				{Kind: Retrying, Desc: a, Attempt: 1, Reason: "HTTP 503"},
				{Kind: Progressed, Desc: a, Attempt: 2, Offset: 2 * mib},
			},
			blobs: []want{{state: StateActive, offset: 2 * mib, wire: 8 * mib, attempts: 2, retries: 1, reason: "HTTP 503"}},
			total: 10 * mib, done: 2 * mib, payload: 2 * mib,
		},
		{
			name: "restart from 0 whose first report is past the old offset",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 6 * mib},
				{Kind: Retrying, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 2, Offset: 8 * mib},
				{Kind: Completed, Desc: a, Attempt: 2},
			},
			blobs: []want{{state: StateDone, offset: 10 * mib, wire: 16 * mib, attempts: 2, retries: 1}},
			total: 10 * mib, done: 10 * mib, payload: 10 * mib,
		},
		{
			name: "restart straight to Completed",
			events: []Event{
				{Kind: Started, Desc: b, Attempt: 1},
				{Kind: Progressed, Desc: b, Attempt: 1, Offset: 3 * mib},
				{Kind: Retrying, Desc: b, Attempt: 1},
				{Kind: Completed, Desc: b, Attempt: 2, Offset: 4 * mib},
			},
			blobs: []want{{state: StateDone, offset: 4 * mib, wire: 7 * mib, attempts: 2, retries: 1}},
			total: 4 * mib, done: 4 * mib, payload: 4 * mib,
		},
		{
			name: "reported wire above progress wins",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 5 * mib, Wire: 7 * mib},
				{Kind: Completed, Desc: a, Attempt: 1, Offset: 10 * mib, Wire: 13 * mib},
			},
			blobs: []want{{state: StateDone, offset: 10 * mib, wire: 13 * mib, attempts: 1}},
			total: 10 * mib, done: 10 * mib, payload: 10 * mib,
		},
		{
			name: "reported wire below progress is not believed",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Completed, Desc: a, Attempt: 1, Offset: 10 * mib, Wire: 1},
			},
			blobs: []want{{state: StateDone, offset: 10 * mib, wire: 10 * mib, attempts: 1}},
			total: 10 * mib, done: 10 * mib, payload: 10 * mib,
		},
		{
			name: "skipped and mounted count as done, add no wire or payload",
			events: []Event{
				{Kind: Skipped, Desc: a, Reason: "exists"},
				{Kind: Mounted, Desc: b, Reason: "from repo x/y"},
			},
			blobs: []want{
				{state: StateSkipped, offset: 10 * mib, reason: "exists"},
				{state: StateMounted, offset: 4 * mib, reason: "from repo x/y"},
			},
			total: 14 * mib, done: 14 * mib, payload: 0,
		},
		{
			name: "skipped after completed keeps completed",
			events: []Event{
				{Kind: Started, Desc: b, Attempt: 1},
				{Kind: Completed, Desc: b, Attempt: 1, Offset: 4 * mib},
				{Kind: Skipped, Desc: b, Reason: "exists"},
			},
			blobs: []want{{state: StateDone, offset: 4 * mib, wire: 4 * mib, attempts: 1}},
			total: 4 * mib, done: 4 * mib, payload: 4 * mib,
		},
		{
			name: "failed keeps its committed offset and reason",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 3 * mib},
				{Kind: Retrying, Desc: a, Attempt: 1, Reason: "HTTP 503"},
				{Kind: Resumed, Desc: a, Attempt: 2, Offset: 3 * mib},
				{Kind: Failed, Desc: a, Attempt: 2, Reason: "HTTP 403", Err: errDenied},
			},
			blobs: []want{{state: StateFailed, offset: 3 * mib, wire: 3 * mib, attempts: 2, retries: 1, resumes: 1, reason: "HTTP 403"}},
			total: 10 * mib, done: 3 * mib, payload: 3 * mib,
		},
		{
			name: "retrying state until the next attempt reports",
			events: []Event{
				{Kind: Started, Desc: a, Attempt: 1},
				{Kind: Progressed, Desc: a, Attempt: 1, Offset: 3 * mib},
				{Kind: Retrying, Desc: a, Attempt: 1, Reason: "stalled"},
			},
			blobs: []want{{state: StateRetrying, offset: 3 * mib, wire: 3 * mib, attempts: 1, retries: 1, reason: "stalled"}},
			total: 10 * mib, done: 3 * mib, payload: 3 * mib,
		},
		{
			name: "a second round of the same digest counts once, wire accumulates",
			events: []Event{
				{Kind: Started, Desc: b, Attempt: 1},
				{Kind: Completed, Desc: b, Attempt: 1, Offset: 4 * mib, Wire: 5 * mib},
				{Kind: Started, Desc: b, Attempt: 1},
				{Kind: Progressed, Desc: b, Attempt: 1, Offset: 1 * mib, Wire: 1 * mib},
			},
			blobs: []want{{state: StateActive, offset: 1 * mib, wire: 6 * mib, attempts: 1}},
			total: 4 * mib, done: 1 * mib, payload: 1 * mib,
		},
		{
			name: "notes: deduplicated, digest-less ones kept, first sight pending",
			events: []Event{
				{Kind: Note, Reason: "fallback to monolithic"},
				{Kind: Note, Desc: a, Reason: "fallback to monolithic"},
				{Kind: Note, Desc: a, Reason: "other"},
				{Kind: Note, Desc: a},
			},
			blobs: []want{{state: StatePending}},
			total: 10 * mib, done: 0, payload: 0,
			notes: []string{"fallback to monolithic", "other"},
		},
		{
			name: "progress before start is taken as active",
			events: []Event{
				{Kind: Progressed, Desc: b, Attempt: 1, Offset: 1 * mib},
			},
			blobs: []want{{state: StateActive, offset: 1 * mib, wire: 1 * mib, attempts: 1}},
			total: 4 * mib, done: 1 * mib, payload: 1 * mib,
		},
		{
			name: "events without digest or with invalid kind are ignored",
			events: []Event{
				{Kind: Started, Attempt: 1},
				{Kind: 0, Desc: a},
				{Kind: Note + 1, Desc: a},
			},
			blobs: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker()
			tr.now = func() time.Time { return t0 }
			feed(tr, tt.events...)
			s := tr.Snapshot()
			if len(s.Blobs) != len(tt.blobs) {
				t.Fatalf("%d blobs, want %d: %+v", len(s.Blobs), len(tt.blobs), s.Blobs)
			}
			var wire int64
			for i, w := range tt.blobs {
				bs := s.Blobs[i]
				got := want{bs.State, bs.Offset, bs.Wire, bs.Attempts, bs.Retries, bs.Resumes, bs.Reason}
				if got != w {
					t.Errorf("blob %d:\n got %+v\nwant %+v", i, got, w)
				}
				wire += w.wire
			}
			if s.Total != tt.total || s.Done != tt.done || s.Wire != wire {
				t.Errorf("total/done/wire = %d/%d/%d, want %d/%d/%d", s.Total, s.Done, s.Wire, tt.total, tt.done, wire)
			}
			if p := s.Summary().Payload; p != tt.payload {
				t.Errorf("payload = %d, want %d", p, tt.payload)
			}
			if !reflect.DeepEqual(s.Notes, tt.notes) {
				t.Errorf("notes = %q, want %q", s.Notes, tt.notes)
			}
		})
	}
}

func TestTrackerTotals(t *testing.T) {
	tr := NewTracker()
	a, b, c := desc("a", 10), desc("b", 20), desc("c", 30)
	feed(tr,
		Event{Kind: Started, Desc: a, Attempt: 1, Time: sec(0)},
		Event{Kind: Retrying, Desc: a, Attempt: 1, Backoff: 2 * time.Second, Time: sec(1)},
		Event{Kind: Retrying, Desc: a, Attempt: 2, Backoff: 4 * time.Second, Time: sec(3)},
		Event{Kind: Resumed, Desc: a, Attempt: 3, Offset: 5, Time: sec(7)},
		Event{Kind: Completed, Desc: a, Attempt: 3, Offset: 10, Time: sec(8)},
		Event{Kind: Started, Desc: b, Attempt: 1, Time: sec(0)},
		Event{Kind: Retrying, Desc: b, Attempt: 1, Backoff: time.Second, Time: sec(1)},
		Event{Kind: Failed, Desc: b, Attempt: 2, Err: errors.New("unexpected status 401"), Time: sec(2)},
		Event{Kind: Started, Desc: c, Attempt: 1, Time: sec(0.5)},
		Event{Kind: Failed, Desc: c, Attempt: 1, Reason: "HTTP 404", Time: sec(10)},
	)
	sum := tr.Summary()
	if sum.Blobs != 3 || sum.Completed != 1 || sum.Failed != 2 || sum.Skipped != 0 || sum.Mounted != 0 {
		t.Errorf("counts %+v", sum)
	}
	if sum.Retries != 3 || sum.Resumes != 1 || sum.Backoff != 7*time.Second {
		t.Errorf("retries %d resumes %d backoff %v, want 3 1 7s", sum.Retries, sum.Resumes, sum.Backoff)
	}
	if sum.Elapsed != 10*time.Second {
		t.Errorf("elapsed %v, want 10s", sum.Elapsed)
	}
	if len(sum.Failures) != 2 || sum.Failures[0].Desc.Digest != b.Digest || sum.Failures[1].Desc.Digest != c.Digest {
		t.Fatalf("failures %+v, want b then c", sum.Failures)
	}
	str := sum.String()
	for _, line := range []string{
		"blobs    3 total, manifests and configs included: 1 completed, 0 skipped, 0 mounted, 2 failed",
		"retries  3 (waited 7s), 1 resumed",
		"failed   " + string(b.Digest) + " (20 B): unexpected status 401",
		"failed   " + string(c.Digest) + " (30 B): HTTP 404",
	} {
		if !strings.Contains(str, line+"\n") && !strings.HasSuffix(str, line) {
			t.Errorf("summary lacks line %q:\n%s", line, str)
		}
	}
	if strings.HasSuffix(str, "\n") {
		t.Errorf("summary ends in a newline")
	}
}

func TestSummaryUnfinishedAndEmpty(t *testing.T) {
	var tr Tracker // zero value
	if got := tr.Summary().String(); !strings.HasPrefix(got, "blobs    0 total") || strings.Contains(got, "average") {
		t.Errorf("empty summary:\n%s", got)
	}
	tr.OnEvent(Event{Kind: Started, Desc: desc("a", 10), Attempt: 1})
	if got := tr.Summary().String(); !strings.Contains(got, "1 unfinished") {
		t.Errorf("summary does not mention the unfinished blob:\n%s", got)
	}
	if o := tr.Summary().Overhead(); o != 0 {
		t.Errorf("overhead with no payload = %v, want 0", o)
	}
}

func TestNilTracker(t *testing.T) {
	var tr *Tracker
	tr.OnEvent(Event{Kind: Started, Desc: desc("a", 1)})
	if s := tr.Snapshot(); len(s.Blobs) != 0 {
		t.Errorf("nil tracker snapshot %+v", s)
	}
	_ = tr.Summary().String()
}

func TestTrackerZeroTimeUsesClock(t *testing.T) {
	tr := NewTracker()
	clock := sec(100)
	tr.now = func() time.Time { return clock }
	a := desc("a", 10)
	tr.OnEvent(Event{Kind: Started, Desc: a})
	clock = sec(105)
	tr.OnEvent(Event{Kind: Completed, Desc: a})
	s := tr.Snapshot()
	if !s.First.Equal(sec(100)) || !s.Last.Equal(sec(105)) {
		t.Errorf("first/last %v/%v", s.First, s.Last)
	}
	if b := s.Blobs[0]; !b.First.Equal(sec(100)) || !b.Last.Equal(sec(105)) {
		t.Errorf("blob first/last %v/%v", b.First, b.Last)
	}
}

func TestSnapshotSharesNothing(t *testing.T) {
	tr := NewTracker()
	d := desc("a", 10)
	d.Annotations = map[string]string{ocispec.AnnotationTitle: "model.safetensors"}
	d.URLs = []string{"https://example.com/a"}
	d.Platform = &ocispec.Platform{OS: "linux", OSFeatures: []string{"x"}}
	tr.OnEvent(Event{Kind: Started, Desc: d})
	tr.OnEvent(Event{Kind: Note, Reason: "n"})

	// The emitter reusing its descriptor must not reach the tracker.
	d.Annotations[ocispec.AnnotationTitle] = "changed by emitter"
	d.URLs[0] = "changed"

	s1 := tr.Snapshot()
	s1.Blobs[0].Desc.Annotations[ocispec.AnnotationTitle] = "changed by reader"
	s1.Blobs[0].Desc.Platform.OSFeatures[0] = "y"
	s1.Blobs[0].State = StateFailed
	s1.Notes[0] = "changed"

	s2 := tr.Snapshot()
	got := s2.Blobs[0]
	if got.Desc.Annotations[ocispec.AnnotationTitle] != "model.safetensors" || got.Desc.URLs[0] != "https://example.com/a" ||
		got.Desc.Platform.OSFeatures[0] != "x" || got.State != StateActive || s2.Notes[0] != "n" {
		t.Errorf("snapshot shares memory: %+v notes %q", got, s2.Notes)
	}
}

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-6*math.Max(1, math.Abs(want)) }

func TestTrackerRateAndETA(t *testing.T) {
	a := desc("a", 100*mib)
	var now time.Time
	tr := NewTracker()
	tr.now = func() time.Time { return now }

	if _, ok := tr.Snapshot().ETA(); ok {
		t.Error("ETA known with no blobs")
	}

	now = sec(0)
	tr.OnEvent(Event{Kind: Started, Desc: a, Attempt: 1, Time: now})
	if s := tr.Snapshot(); s.Rate != 0 {
		t.Errorf("rate before progress = %v", s.Rate)
	} else if _, ok := s.ETA(); ok {
		t.Error("ETA known without a rate")
	}

	// A steady 10 MiB/s.
	for i := 1; i <= 5; i++ {
		now = sec(float64(i))
		tr.OnEvent(Event{Kind: Progressed, Desc: a, Attempt: 1, Offset: int64(i) * 10 * mib, Time: now})
	}
	s := tr.Snapshot()
	if !near(s.Rate, 10*mib) {
		t.Fatalf("steady rate = %v, want %v", s.Rate, 10*mib)
	}
	if eta, ok := s.ETA(); !ok || eta != 5*time.Second {
		t.Errorf("ETA = %v %v, want 5s (50 MiB left at 10 MiB/s)", eta, ok)
	}

	// One second at 20 MiB/s moves the average by 1-e^(-1/5) of the step.
	now = sec(6)
	tr.OnEvent(Event{Kind: Progressed, Desc: a, Attempt: 1, Offset: 70 * mib, Time: now})
	rate := 10*mib + (1-math.Exp(-0.2))*10*mib
	if s := tr.Snapshot(); !near(s.Rate, rate) {
		t.Errorf("rate after step = %v, want %v", s.Rate, rate)
	}

	// Silence: the snapshot decays the rate by e^(-dt/tau) without an event.
	now = sec(11)
	if s := tr.Snapshot(); !near(s.Rate, rate*math.Exp(-1)) {
		t.Errorf("rate after 5s of silence = %v, want %v", s.Rate, rate*math.Exp(-1))
	}
	// ...without changing the tracker: a snapshot is a read.
	now = sec(6)
	if s := tr.Snapshot(); !near(s.Rate, rate) {
		t.Errorf("snapshot changed the rate: %v, want %v", s.Rate, rate)
	}

	// Skipped blobs add bytes to Done but not to the rate.
	now = sec(6.5)
	tr.OnEvent(Event{Kind: Skipped, Desc: desc("big", 1<<40), Time: now})
	if s := tr.Snapshot(); s.Rate > rate {
		t.Errorf("skipped blob raised the rate to %v", s.Rate)
	}

	now = sec(7)
	tr.OnEvent(Event{Kind: Completed, Desc: a, Attempt: 1, Offset: 100 * mib, Time: now})
	if eta, ok := tr.Snapshot().ETA(); !ok || eta != 0 {
		t.Errorf("ETA when all done = %v %v, want 0 true", eta, ok)
	}
}

func TestTrackerRateMergesShortSamples(t *testing.T) {
	tr := NewTracker()
	a := desc("a", 100*mib)
	tr.OnEvent(Event{Kind: Started, Desc: a, Time: sec(0)})
	// 10 MiB/s reported 20 times a second: most intervals are shorter than
	// rateMinSample and merge into the next; a constant rate stays exact.
	for i := 1; i <= 100; i++ {
		tr.OnEvent(Event{Kind: Progressed, Desc: a, Offset: int64(i) * mib / 2, Time: sec(float64(i) / 20)})
	}
	tr.now = func() time.Time { return sec(5) }
	if s := tr.Snapshot(); !near(s.Rate, 10*mib) {
		t.Errorf("rate = %v, want %v", s.Rate, 10*mib)
	}
}

func TestTrackerRateIgnoresOutOfOrderTimes(t *testing.T) {
	tr := NewTracker()
	tr.now = func() time.Time { return sec(2) }
	a, b := desc("a", 100*mib), desc("b", 100*mib)
	feed(tr,
		Event{Kind: Started, Desc: a, Time: sec(0)},
		Event{Kind: Started, Desc: b, Time: sec(0)},
		Event{Kind: Progressed, Desc: a, Offset: 10 * mib, Time: sec(1)},
		Event{Kind: Progressed, Desc: b, Offset: 10 * mib, Time: sec(0.9)}, // raced in late
		Event{Kind: Progressed, Desc: a, Offset: 20 * mib, Time: sec(2)},
	)
	if s := tr.Snapshot(); s.Rate <= 0 || math.IsNaN(s.Rate) || math.IsInf(s.Rate, 0) {
		t.Errorf("rate = %v", s.Rate)
	}
	if s := tr.Snapshot(); !s.First.Equal(sec(0)) || !s.Last.Equal(sec(2)) {
		t.Errorf("first/last = %v/%v", s.First, s.Last)
	}
}

func TestSummaryRateAndOverhead(t *testing.T) {
	s := Summary{Payload: 100 * mib, Wire: 150 * mib, Elapsed: 10 * time.Second}
	if s.Overhead() != 1.5 {
		t.Errorf("overhead = %v", s.Overhead())
	}
	if s.Rate() != 10*mib {
		t.Errorf("rate = %v", s.Rate())
	}
	if !strings.Contains(s.String(), "bytes    100 MiB payload, 150 MiB on the wire (1.50x)") ||
		!strings.Contains(s.String(), "time     10s, 10.0 MiB/s average") {
		t.Errorf("summary:\n%s", s)
	}
}

// TestTrackerConcurrent drives a Tracker through Multi and Log from many
// blob goroutines while readers take snapshots; run it with -race.
func TestTrackerConcurrent(t *testing.T) {
	const (
		blobs = 64
		steps = 50
		size  = steps * 1024
	)
	tr := NewTracker()
	obs := Multi(tr, Log(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))))

	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := tr.Snapshot()
				if s.Done > s.Total {
					t.Errorf("done %d > total %d", s.Done, s.Total)
				}
				s.ETA()
				_ = s.Summary().String()
			}
		})
	}
	for i := range blobs {
		writers.Go(func() {
			d := desc(fmt.Sprint("blob", i), size)
			switch i % 4 {
			case 0:
				obs.OnEvent(Event{Kind: Skipped, Desc: d, Reason: "exists"})
				return
			case 1:
				obs.OnEvent(Event{Kind: Note, Reason: "fallback"})
			}
			obs.OnEvent(Event{Kind: Started, Desc: d, Attempt: 1})
			for s := 1; s <= steps; s++ {
				obs.OnEvent(Event{Kind: Progressed, Desc: d, Attempt: 1, Offset: int64(s) * 1024})
				if s == steps/2 {
					obs.OnEvent(Event{Kind: Retrying, Desc: d, Attempt: 1, Reason: "connection reset"})
					obs.OnEvent(Event{Kind: Resumed, Desc: d, Attempt: 2, Offset: int64(s) * 1024})
				}
			}
			obs.OnEvent(Event{Kind: Completed, Desc: d, Attempt: 2, Offset: size})
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()

	s := tr.Snapshot()
	sum := s.Summary()
	if s.Total != blobs*size || s.Done != s.Total {
		t.Errorf("total %d done %d, want %d", s.Total, s.Done, blobs*size)
	}
	if sum.Completed != blobs*3/4 || sum.Skipped != blobs/4 {
		t.Errorf("completed %d skipped %d", sum.Completed, sum.Skipped)
	}
	if sum.Retries != blobs*3/4 || sum.Resumes != blobs*3/4 {
		t.Errorf("retries %d resumes %d", sum.Retries, sum.Resumes)
	}
	if sum.Wire != sum.Payload || sum.Payload != blobs*3/4*size {
		t.Errorf("wire %d payload %d, want both %d", sum.Wire, sum.Payload, blobs*3/4*size)
	}
	if !reflect.DeepEqual(s.Notes, []string{"fallback"}) {
		t.Errorf("notes %q", s.Notes)
	}
}

// Retries and resumes of one range are counted but leave the blob at its
// own offset; Completed's Sources are summed per source.
func TestTrackerRangesAndSources(t *testing.T) {
	a, b := desc("a", 100<<20), desc("b", 10<<20)
	r := Range{Start: 40 << 20, End: 48 << 20}
	tr := NewTracker()
	feed(tr,
		Event{Kind: Started, Desc: a, Time: sec(0)},
		Event{Kind: Progressed, Desc: a, Offset: 16 << 20, Time: sec(1)},
		Event{Kind: Retrying, Desc: a, Range: r, Offset: 43 << 20, Attempt: 1, Reason: "connection reset", Time: sec(1.1)},
		Event{Kind: Resumed, Desc: a, Range: r, Offset: 43 << 20, Attempt: 2, Time: sec(1.2)},
		Event{Kind: Progressed, Desc: a, Offset: 32 << 20, Time: sec(2)},
		Event{Kind: Completed, Desc: a, Offset: a.Size, Sources: map[string]int64{"cache": 60 << 20, "origin": 40 << 20}, Time: sec(3)},
		Event{Kind: Started, Desc: b, Time: sec(3)},
		Event{Kind: Completed, Desc: b, Offset: b.Size, Sources: map[string]int64{"origin": 10 << 20}, Time: sec(4)},
	)
	s := tr.Snapshot()
	if s.Retries != 1 || s.Resumes != 1 {
		t.Fatalf("retries %d resumes %d", s.Retries, s.Resumes)
	}
	if s.Blobs[0].Wire != a.Size {
		t.Fatalf("a range's events moved the blob: wire %d, want %d", s.Blobs[0].Wire, a.Size)
	}
	sum := s.Summary()
	if sum.Sources["cache"] != 60<<20 || sum.Sources["origin"] != 50<<20 {
		t.Fatalf("sources %v", sum.Sources)
	}
	if !strings.Contains(sum.String(), "sources  cache 60.0 MiB, origin 50.0 MiB") {
		t.Fatalf("summary:\n%s", sum)
	}
}

// Bytes an earlier process kept are reused, not wire: the summary says so
// on its bytes line, and a second Resumed of the same blob does not count
// them twice.
func TestTrackerReused(t *testing.T) {
	const mib = 1 << 20
	a := desc("a", 512*mib)
	tr := NewTracker()
	feed(tr,
		Event{Kind: Started, Desc: a, Time: sec(0)},
		Event{Kind: Resumed, Desc: a, Offset: 256 * mib, Reused: 256 * mib, Time: sec(1)},
		Event{Kind: Progressed, Desc: a, Offset: 384 * mib, Wire: 128 * mib, Time: sec(2)},
		Event{Kind: Retrying, Desc: a, Offset: 384 * mib, Time: sec(2)},
		Event{Kind: Resumed, Desc: a, Offset: 384 * mib, Attempt: 2, Time: sec(3)},
		Event{Kind: Completed, Desc: a, Offset: 512 * mib, Wire: 256 * mib, Time: sec(4)},
	)
	s := tr.Summary()
	if s.Reused != 256*mib || s.Payload != 512*mib || s.Wire != 256*mib {
		t.Fatalf("summary %+v", s)
	}
	if want := "bytes    512 MiB payload, 256 MiB on the wire (0.50x), 256 MiB reused from kept state"; !strings.Contains(s.String(), want) {
		t.Fatalf("summary:\n%s\nwant line %q", s, want)
	}
	if snap := tr.Snapshot(); snap.Blobs[0].Reused != 256*mib || snap.Reused != 256*mib {
		t.Fatalf("snapshot %+v", snap)
	}
}

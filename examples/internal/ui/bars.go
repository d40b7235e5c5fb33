package ui

import (
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/sturdyoci/sturdy/progress"
)

// Bars draws one mpb progress bar per blob: its name, bytes, a rate that
// falls while nothing moves, and a message with the blob's state and the
// last retry reason ("retry 2: connection reset, waiting 1.2s",
// "resumed at 64.0 MiB | last: stalled").
type Bars struct {
	p     *mpb.Progress
	phase string

	mu   sync.Mutex // guards bars and order
	bars map[digest.Digest]*bar
	// order keeps bars in creation order for Close.
	order []*bar
}

// NewBars starts an mpb container writing to w. Options are for tests
// (mpb.WithOutput, mpb.WithAutoRefresh, mpb.WithWidth).
func NewBars(w io.Writer, phase string, opts ...mpb.ContainerOption) *Bars {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithRefreshRate(120 * time.Millisecond)}, opts...)
	return &Bars{p: mpb.New(opts...), phase: phase, bars: map[digest.Digest]*bar{}}
}

// messageWidth fits "resumed at 96.0 MiB | last retry: connection reset".
const messageWidth = 53 // and a leading space

// counters is a decorator: bytes moved and total, in the units the rest
// of the output uses. It reads only mpb's own statistics.
func counters(s decor.Statistics) string { return Bytes(s.Current) + " / " + Bytes(s.Total) }

// rateTau is the time constant of a bar's smoothed rate: long enough to
// ride out chunk boundaries, short enough that a stall shows within
// seconds.
const rateTau = 2 * time.Second

// bar is one blob. mpb's render goroutine calls the decorators, which read
// barState; OnEvent writes it from transfer goroutines. Both go through
// mu, and nothing holds mu while calling into mpb (whose calls wait for
// the bar's own goroutine).
type bar struct {
	b    *mpb.Bar
	size int64

	mu sync.Mutex
	st barState
}

type barState struct {
	state        string // "active", "resumed at 64.0 MiB", "done", "failed: ..."
	terminal     bool
	retries      int
	attempt      int       // the failed attempt of the latest retry
	reason       string    // the latest retry reason
	retryUntil   time.Time // end of the current backoff; zero when not waiting
	start, end   time.Time
	offset       int64
	lastAt       time.Time
	rate         float64 // smoothed bytes/s at lastAt
	haveRateBase bool
}

// OnEvent implements progress.Observer.
func (d *Bars) OnEvent(e progress.Event) {
	now := e.Time
	if now.IsZero() {
		now = time.Now()
	}
	if e.Desc.Digest == "" {
		if e.Kind == progress.Note {
			// Printed above the bars; mpb serialises it with rendering.
			fmt.Fprintf(d.p, "%s: note: %s\n", d.phase, e.Reason)
		}
		return
	}
	b := d.bar(e.Desc)
	switch e.Kind {
	case progress.Started:
		b.with(func(s *barState) {
			s.state, s.start = "active", now
			s.sample(e.Offset, now, false)
		})
		b.b.SetCurrent(e.Offset)
	case progress.Progressed:
		b.with(func(s *barState) {
			if !s.retryUntil.IsZero() {
				// An attempt after a retry that did not resume: from 0.
				s.state, s.retryUntil = "restarted", time.Time{}
			}
			s.sample(e.Offset, now, true)
		})
		b.b.SetCurrent(e.Offset)
	case progress.Retrying, progress.Resumed:
		if !e.Range.IsZero() {
			// One connection of several: the bar stays where the
			// blob's ordered stream is.
			b.with(func(s *barState) { s.retries += boolInt(e.Kind == progress.Retrying); s.reason = e.Reason })
			break
		}
		if e.Kind == progress.Resumed {
			b.with(func(s *barState) {
				s.state, s.retryUntil = "resumed at "+Bytes(e.Offset), time.Time{}
				s.sample(e.Offset, now, false)
			})
			b.b.SetCurrent(e.Offset)
			break
		}
		b.with(func(s *barState) {
			s.retries++
			s.attempt, s.reason = e.Attempt, e.Reason
			s.retryUntil = now.Add(e.Backoff)
		})
	case progress.Completed:
		b.finish(now, "done")
		b.b.SetTotal(b.size, true)
	case progress.Skipped:
		b.finish(now, "skipped: "+e.Reason)
		b.b.SetTotal(b.size, true)
	case progress.Mounted:
		b.finish(now, "mounted "+e.Reason)
		b.b.SetTotal(b.size, true)
	case progress.Failed:
		b.finish(now, "failed: "+e.Reason)
		b.b.Abort(false)
	case progress.Note:
		fmt.Fprintf(d.p, "%s: %s: note: %s\n", d.phase, Label(e.Desc), e.Reason)
	}
}

// bar returns the bar of desc, adding it on first sight.
func (d *Bars) bar(desc ocispec.Descriptor) *bar {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b := d.bars[desc.Digest]; b != nil {
		return b
	}
	b := &bar{size: desc.Size}
	b.st.state = "waiting"
	// Total 0 at creation leaves completion to SetTotal(size, true): a
	// bar must not complete when the last byte is sent, only when the
	// blob is committed (a reset can still come before the commit).
	b.b = d.p.AddBar(0,
		mpb.PrependDecorators(decor.Name(Label(desc), decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.Any(counters, decor.WCSyncSpace),
			decor.Any(b.rateText, decor.WCSyncSpace),
			// A fixed width keeps the bar from jumping as messages change.
			decor.Any(b.message, decor.WC{W: messageWidth, C: decor.DindentRight}),
		),
	)
	b.b.SetTotal(desc.Size, false)
	d.bars[desc.Digest] = b
	d.order = append(d.order, b)
	return b
}

// Close marks the bars of unfinished blobs aborted (a cancelled copy),
// waits for the last render and stops mpb's goroutines.
func (d *Bars) Close() {
	d.mu.Lock()
	order := d.order
	d.mu.Unlock()
	for _, b := range order {
		b.mu.Lock()
		open := !b.st.terminal
		if open {
			b.st.state, b.st.terminal, b.st.retryUntil = "unfinished", true, time.Time{}
		}
		b.mu.Unlock()
		if open {
			b.b.Abort(false)
		}
	}
	d.p.Wait()
}

func (b *bar) with(f func(*barState)) {
	b.mu.Lock()
	f(&b.st)
	b.mu.Unlock()
}

func (b *bar) finish(now time.Time, state string) {
	b.with(func(s *barState) {
		s.state, s.terminal, s.end, s.retryUntil = state, true, now, time.Time{}
	})
}

// sample folds a new offset into the smoothed rate. cont says the offset
// continues the previous one; a start or a resume only sets the base.
func (s *barState) sample(off int64, now time.Time, cont bool) {
	if cont && s.haveRateBase && off >= s.offset {
		if dt := now.Sub(s.lastAt).Seconds(); dt > 0 {
			inst := float64(off-s.offset) / dt
			alpha := 1 - math.Exp(-dt/rateTau.Seconds())
			s.rate += alpha * (inst - s.rate)
		}
	}
	s.offset, s.lastAt, s.haveRateBase = off, now, true
}

// rateText is a decorator: the smoothed rate, decayed over the time since
// the last event so that a stalled connection shows as slowing down; the
// average once the blob is done.
func (b *bar) rateText(decor.Statistics) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &b.st
	switch {
	case s.terminal && !s.end.IsZero() && s.end.After(s.start) && !s.start.IsZero():
		return Rate(float64(b.size) / s.end.Sub(s.start).Seconds())
	case s.terminal || !s.haveRateBase:
		return ""
	}
	idle := time.Since(s.lastAt).Seconds()
	return Rate(s.rate * math.Exp(-max(idle, 0)/rateTau.Seconds()))
}

// message is a decorator: the state and, once something went wrong, the
// latest retry and its reason. While a backoff runs it counts down.
func (b *bar) message(decor.Statistics) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return " " + b.st.text(time.Now())
}

func (s *barState) text(now time.Time) string {
	if !s.retryUntil.IsZero() {
		wait := max(s.retryUntil.Sub(now), 0)
		return fmt.Sprintf("retry %d: %s, waiting %s", s.attempt, s.reason, Duration(wait))
	}
	if s.retries == 0 {
		return s.state
	}
	if s.terminal {
		return fmt.Sprintf("%s (%s, last: %s)", s.state, plural(s.retries, "retry", "retries"), s.reason)
	}
	return fmt.Sprintf("%s | last retry: %s", s.state, s.reason)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

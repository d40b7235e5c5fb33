package ui

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sturdyoci/sturdy/progress"
)

// Lines writes one line per event of interest -- started, retrying,
// resumed, completed, skipped, mounted, failed, note -- and none for
// Progressed: a log, not an animation. Lines are whole and never
// interleaved, whatever goroutines the events come from.
type Lines struct {
	w     io.Writer
	phase string

	mu    sync.Mutex // serialises writes and guards the fields below
	start time.Time
	blobs map[digest.Digest]*lineBlob
}

// lineBlob is what a completion line reports about its blob.
type lineBlob struct {
	started          time.Time
	retries, resumes int
}

// labelWidth fits "model-00001-of-00003.safetensors"; longer labels push
// the rest of their line right rather than being cut.
const labelWidth = 34

// NewLines returns a line printer writing to w.
func NewLines(w io.Writer, phase string) *Lines {
	return &Lines{w: w, phase: phase, blobs: map[digest.Digest]*lineBlob{}}
}

// OnEvent implements progress.Observer.
func (l *Lines) OnEvent(e progress.Event) {
	if e.Kind == progress.Progressed {
		return
	}
	at := e.Time
	if at.IsZero() {
		at = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start.IsZero() {
		l.start = at
	}
	b := l.blobs[e.Desc.Digest]
	if b == nil {
		b = &lineBlob{started: at}
		l.blobs[e.Desc.Digest] = b
	}

	var detail string
	switch e.Kind {
	case progress.Started:
		b.started = at
		detail = Bytes(e.Desc.Size)
	case progress.Retrying:
		b.retries++
		detail = fmt.Sprintf("attempt %d failed at %s: %s; waiting %s", e.Attempt, Bytes(e.Offset), e.Reason, Duration(e.Backoff))
		if !e.Range.IsZero() {
			detail = rangeText(e.Range) + " " + detail
		}
	case progress.Resumed:
		b.resumes++
		detail = "at " + Bytes(e.Offset) + " of " + Bytes(e.Desc.Size)
		if !e.Range.IsZero() {
			detail = rangeText(e.Range) + " " + detail
		}
	case progress.Completed:
		detail = completion(e, b, at)
	case progress.Skipped, progress.Mounted:
		detail = e.Reason
	case progress.Failed:
		detail = fmt.Sprintf("after %d attempt(s) at %s: %s", e.Attempt, Bytes(e.Offset), e.Reason)
	case progress.Note:
		detail = e.Reason
	default:
		return
	}
	label := "-"
	if e.Desc.Digest != "" {
		label = Label(e.Desc)
	}
	elapsed := at.Sub(l.start).Seconds()
	fmt.Fprintf(l.w, "%7.1fs %-5s %-10s %-*s %s\n", elapsed, l.phase, e.Kind, labelWidth, label, detail)
}

// rangeText names one range of a blob fetched over several connections.
func rangeText(r progress.Range) string {
	return "range " + Bytes(r.Start) + "-" + Bytes(r.End) + ":"
}

// completion says what a blob cost: time, rate, retries and the wire
// overhead (bytes sent or received / blob size).
func completion(e progress.Event, b *lineBlob, at time.Time) string {
	var s strings.Builder
	took := at.Sub(b.started)
	fmt.Fprintf(&s, "%s in %s", Bytes(e.Desc.Size), Duration(took))
	if took > 0 && e.Desc.Size > 0 {
		fmt.Fprintf(&s, " (%s)", Rate(float64(e.Desc.Size)/took.Seconds()))
	}
	if b.retries > 0 {
		fmt.Fprintf(&s, ", %s, %d resumed", plural(b.retries, "retry", "retries"), b.resumes)
	}
	if e.Wire > 0 && e.Desc.Size > 0 {
		fmt.Fprintf(&s, ", wire %.2fx", float64(e.Wire)/float64(e.Desc.Size))
	}
	return s.String()
}

// Close implements Display; lines need no cleanup.
func (l *Lines) Close() {}

package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/sturdyoci/sturdy/internal/statedir"
	"github.com/sturdyoci/sturdy/progress"
)

// stateEvents records a blob's events and Notes.
type stateEvents struct {
	mu     sync.Mutex
	events []progress.Event
}

func (s *stateEvents) OnEvent(e progress.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
}

func (s *stateEvents) of(k progress.Kind) []progress.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []progress.Event
	for _, e := range s.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func (s *stateEvents) noted(sub string) bool {
	for _, e := range s.of(progress.Note) {
		if strings.Contains(e.Reason, sub) {
			return true
		}
	}
	return false
}

func readStateMeta(t *testing.T, state string, s *rangeServer) statedir.Meta {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(state, "blobs", string(s.desc.Digest.Algorithm()), s.desc.Digest.Encoded(), "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := statedir.ParseMeta(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// interruptParallelPull pulls s's blob over conns connections with
// StateDir state while range 1 sends half its bytes and hangs: the other
// connections fetch the window ahead, then the copy is cancelled (as
// Ctrl-C would). It returns the meta the copy left.
func interruptParallelPull(t *testing.T, s *rangeServer, state string, rangeSize int64, conns int) statedir.Meta {
	t.Helper()
	var served sync.WaitGroup
	window := 2*conns - 1 // ranges 2..2*conns fetched ahead of the stuck range 1
	served.Add(window)
	var mu sync.Mutex
	seen := map[int64]bool{}
	s.hold = func(start int64, w http.ResponseWriter, r *http.Request) {
		switch {
		case start == rangeSize:
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, 2*rangeSize-1, s.desc.Size))
			w.Header().Set("Content-Length", fmt.Sprint(rangeSize))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(s.blob[start : start+rangeSize/2])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			panic(http.ErrAbortHandler)
		case start > rangeSize:
			mu.Lock()
			if !seen[start] && start <= int64(window+1)*rangeSize {
				seen[start] = true
				defer served.Done() // after ServeContent below has written it
			}
			mu.Unlock()
		}
	}
	// The deferred Done above runs when hold returns, before the body is
	// written: give the client a moment to receive the ranges.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts := Options{StateDir: state, PullConnections: conns, PullRangeSize: rangeSize, Retry: fastRetry}
	go func() { done <- CopyGraph(ctx, s.source(), memory.New(), s.desc, opts) }()
	served.Wait()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy = %v, want it cancelled", err)
	}
	s.hold = nil
	return readStateMeta(t, state, s)
}

// A parallel pull interrupted with ranges fetched ahead of the contiguous
// prefix keeps them (and what the stuck range received) at their offsets;
// the next copy with the same StateDir serves them from disk, fetches none
// of them again, and the blob verifies. Event.Reused counts every kept
// byte, Event.Wire none of them.
func TestStateDirKeepsParallelRanges(t *testing.T) {
	checkLeaks(t)
	const rangeSize, conns = 64 << 10, 4
	s := newRangeServer(t, 32*rangeSize)
	state := t.TempDir()
	m := interruptParallelPull(t, s, state, rangeSize, conns)
	// Range 0 and half of range 1 are the prefix; ranges 2..8 are ahead.
	if m.Kept != rangeSize+rangeSize/2 || len(m.Ranges) != 1 || m.Ranges[0] != (statedir.Span{Start: 2 * rangeSize, End: 9 * rangeSize}) {
		t.Fatalf("kept %d and ranges %v, want %d and [%d,%d)", m.Kept, m.Ranges, rangeSize+rangeSize/2, 2*rangeSize, 9*rangeSize)
	}
	kept := m.Kept + m.Ranges[0].Len()

	s.mu.Lock()
	s.starts = nil
	s.mu.Unlock()
	var ev stateEvents
	tr := progress.NewTracker()
	dst := memory.New()
	opts := Options{StateDir: state, PullConnections: conns, PullRangeSize: rangeSize, Retry: fastRetry, Observer: progress.Multi(&ev, tr)}
	if err := CopyGraph(context.Background(), s.source(), dst, s.desc, opts); err != nil {
		t.Fatal(err)
	}
	if got, err := content.FetchAll(context.Background(), dst, s.desc); err != nil || !bytes.Equal(got, s.blob) {
		t.Fatalf("the destination's blob: %v, or bytes differ", err)
	}
	s.mu.Lock()
	starts := append([]int64(nil), s.starts...)
	s.mu.Unlock()
	for _, st := range starts {
		if st < m.Kept || (st >= m.Ranges[0].Start && st < m.Ranges[0].End) {
			t.Errorf("a ranged GET at %d: inside what was kept (prefix %d, %v)", st, m.Kept, m.Ranges)
		}
	}
	if len(starts) == 0 || starts[0] != m.Kept {
		t.Errorf("ranged GETs at %v, want the first at %d", starts, m.Kept)
	}
	// A read up to a kept span ends there, with no retry.
	if r := ev.of(progress.Retrying); len(r) > 0 {
		t.Errorf("retries in the second copy: %+v", r)
	}
	var reused int64
	for _, e := range ev.of(progress.Resumed) {
		reused = max(reused, e.Reused)
	}
	completed := ev.of(progress.Completed)
	if reused != kept || len(completed) != 1 || completed[0].Wire != s.desc.Size-kept {
		t.Errorf("Reused %d, want %d; Completed %+v, want Wire %d", reused, kept, completed, s.desc.Size-kept)
	}
	if sum := tr.Summary(); sum.Reused != kept || sum.Wire != s.desc.Size-kept {
		t.Errorf("summary: reused %d, wire %d; want %d and %d", sum.Reused, sum.Wire, kept, s.desc.Size-kept)
	}
	if _, err := os.Stat(filepath.Join(state, "blobs", "sha256", s.desc.Digest.Encoded())); !os.IsNotExist(err) {
		t.Errorf("state left after a completed copy: %v", err)
	}
}

// Kept ranges are a hint: a byte flipped in one fails the digest over the
// whole stream, every kept byte is dropped and the blob restarts once from
// 0, with a Note; a meta whose ranges overlap is discarded with a Note and
// never used. Both end in the right bytes.
func TestStateDirKeptRangesNeverTrusted(t *testing.T) {
	checkLeaks(t)
	const rangeSize, conns = 64 << 10, 4
	for _, tc := range []struct {
		name, note string
		damage     func(dir string, m statedir.Meta)
	}{
		{"flipped", "digest mismatch over bytes kept", func(dir string, m statedir.Meta) {
			f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := []byte{0}
			f.ReadAt(b, m.Ranges[0].Start+5)
			b[0] ^= 0xff
			f.WriteAt(b, m.Ranges[0].Start+5)
		}},
		{"overlapping", "unusable", func(dir string, m statedir.Meta) {
			raw, _ := json.Marshal(m)
			bad := strings.Replace(string(raw), `"ranges":[[`, fmt.Sprintf(`"ranges":[[%d,%d],[`, m.Kept+1, m.Ranges[0].Start+1), 1)
			if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(bad), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRangeServer(t, 32*rangeSize)
			state := t.TempDir()
			m := interruptParallelPull(t, s, state, rangeSize, conns)
			if len(m.Ranges) == 0 {
				t.Fatalf("no ranges kept: %+v", m)
			}
			tc.damage(filepath.Join(state, "blobs", "sha256", s.desc.Digest.Encoded()), m)
			var ev stateEvents
			dst := memory.New()
			opts := Options{StateDir: state, PullConnections: conns, PullRangeSize: rangeSize, Retry: fastRetry, Observer: &ev}
			if err := CopyGraph(context.Background(), s.source(), dst, s.desc, opts); err != nil {
				t.Fatal(err)
			}
			if got, err := content.FetchAll(context.Background(), dst, s.desc); err != nil || !bytes.Equal(got, s.blob) {
				t.Fatalf("the destination's blob: %v, or bytes differ", err)
			}
			if !ev.noted(tc.note) {
				t.Fatalf("no Note with %q: %+v", tc.note, ev.of(progress.Note))
			}
		})
	}
}

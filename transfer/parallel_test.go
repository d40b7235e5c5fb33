package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"

	"github.com/sturdyoci/sturdy/progress"
)

// rangeServer serves one blob with net/http's own Range implementation
// (http.ServeContent); hold, if set, runs before a range is served and may
// block it.
type rangeServer struct {
	blob []byte
	desc ocispec.Descriptor
	srv  *httptest.Server
	hold func(start int64, w http.ResponseWriter, r *http.Request)
	// pace, if set, is slept after every 4 KiB a response writes: a link
	// that caps each connection. With shared, the connections take turns
	// (a link capped in total).
	pace   time.Duration
	shared bool
	turn   sync.Mutex

	mu     sync.Mutex
	starts []int64 // the first byte of every ranged GET, in arrival order
	// inFlight counts the requests being served; maxInFlight is its peak.
	inFlight, maxInFlight int
}

type pacedWriter struct {
	http.ResponseWriter
	pace time.Duration
	turn *sync.Mutex // if not nil, held while writing and sleeping
}

func (w pacedWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		k := min(len(p), 4<<10)
		if w.turn != nil {
			w.turn.Lock()
		}
		m, err := w.ResponseWriter.Write(p[:k])
		if err == nil {
			_ = http.NewResponseController(w.ResponseWriter).Flush()
			time.Sleep(w.pace)
		}
		if w.turn != nil {
			w.turn.Unlock()
		}
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func newRangeServer(t *testing.T, size int) *rangeServer {
	t.Helper()
	s := &rangeServer{blob: make([]byte, size)}
	if _, err := rand.Read(s.blob); err != nil {
		t.Fatal(err)
	}
	s.desc = ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(s.blob), Size: int64(size)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := int64(0)
		if v, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
			a, _, _ := strings.Cut(v, "-")
			start, _ = strconv.ParseInt(a, 10, 64)
		}
		s.mu.Lock()
		s.starts = append(s.starts, start)
		s.mu.Unlock()
		if s.hold != nil {
			s.hold(start, w, r)
		}
		s.mu.Lock()
		s.inFlight++
		s.maxInFlight = max(s.maxInFlight, s.inFlight)
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight--
			s.mu.Unlock()
		}()
		if s.pace > 0 {
			pw := pacedWriter{ResponseWriter: w, pace: s.pace}
			if s.shared {
				pw.turn = &s.turn
			}
			w = pw
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.blob))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// checkLeaks checks, after the test's servers have closed (cleanups run
// last in, first out), that no goroutine the test started is left.
func checkLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func (s *rangeServer) source() *URLSource {
	return &URLSource{URL: func(context.Context, ocispec.Descriptor) (string, error) { return s.srv.URL + "/blob", nil }, Client: s.srv.Client()}
}

// While the first range is held, the other connections fetch at most a
// window of ranges ahead (2 x PullConnections), not the blob; once it is
// released the reader gets every byte in order, verified.
func TestParallelWindowBoundsMemory(t *testing.T) {
	checkLeaks(t)
	const rangeSize, conns = 64 << 10, 4
	s := newRangeServer(t, 64*rangeSize)
	release := make(chan struct{})
	var held atomic.Bool
	s.hold = func(start int64, _ http.ResponseWriter, r *http.Request) {
		if start == rangeSize*0 && r.Header.Get("Range") != "" && held.CompareAndSwap(false, true) {
			// The probe: let it through. The next request for range 0
			// is a retry; there is none here.
			return
		}
		if start == rangeSize { // range 1 waits: the reader is stuck after range 0
			<-release
		}
	}
	var obs sync.Map
	opts := Options{PullConnections: conns, PullRangeSize: rangeSize, Observer: progress.Func(func(e progress.Event) {
		if e.Kind == progress.Note {
			obs.Store(e.Reason, true)
		}
	})}
	rc, err := OpenURL(context.Background(), s.source(), s.desc, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	first := make([]byte, rangeSize)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the other workers run ahead as far as the window lets them
	s.mu.Lock()
	var furthest int64
	for _, st := range s.starts {
		furthest = max(furthest, st)
	}
	asked := len(s.starts)
	s.mu.Unlock()
	// Ranges 0..2*conns-1 may be held; range 0 is consumed, so one more.
	if limit := int64(2*conns) * rangeSize; furthest > limit {
		t.Fatalf("with range 1 held, a range at %d was asked for (window ends at %d); %d requests", furthest, limit, asked)
	}
	close(release)
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(first, rest...), s.blob) {
		t.Fatal("bytes differ")
	}
	if _, ok := obs.Load("fetching in ranges of 64.0 KiB over up to 4 connections"); !ok {
		t.Fatal("no note of the parallel read")
	}
}

// A server that garbles one range's bytes: the digest over the ordered
// stream catches it; nothing unverified is handed out as complete.
func TestParallelDigestChecked(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 16*rangeSize)
	s.blob = bytes.Clone(s.blob) // s.desc keeps the digest of the good bytes
	s.blob[5*rangeSize+7] ^= 0xff
	rc, err := OpenURL(context.Background(), s.source(), s.desc, Options{PullRangeSize: rangeSize, Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
}

// Close in the middle of a parallel read ends every connection at once,
// even those held by a server that never answers.
func TestParallelCloseEndsEveryRange(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 32*rangeSize)
	s.hold = func(start int64, _ http.ResponseWriter, r *http.Request) {
		if start >= 2*rangeSize {
			<-r.Context().Done()
		}
	}
	rc, err := OpenURL(context.Background(), s.source(), s.desc, Options{PullRangeSize: rangeSize, Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2*rangeSize)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the other ranges are asked for, and held
	start := time.Now()
	rc.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v", took)
	}
	if _, err := rc.Read(buf); err == nil {
		t.Fatal("a Read after Close succeeded")
	}
}

// A range that is retried reports its range; the blob's own attempt count
// does not move.
func TestParallelRangeRetryEvent(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 8*rangeSize)
	var failed atomic.Bool
	s.hold = func(start int64, w http.ResponseWriter, r *http.Request) {
		if start == 3*rangeSize && failed.CompareAndSwap(false, true) {
			// 1000 bytes of the range, then the connection drops.
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+rangeSize-1, s.desc.Size))
			w.Header().Set("Content-Length", strconv.Itoa(rangeSize))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(s.blob[start : start+1000])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
	}
	got := readWithEvents(t, s, Options{PullConnections: DefaultPullConnections, PullRangeSize: rangeSize, Retry: fastRetry}, io.ReadAll)
	var retries, resumes []progress.Event
	for _, e := range got {
		switch e.Kind {
		case progress.Retrying:
			retries = append(retries, e)
		case progress.Resumed:
			resumes = append(resumes, e)
		}
		if e.Attempt > 1 && e.Range.IsZero() {
			t.Errorf("a blob event at attempt %d: %+v", e.Attempt, e)
		}
	}
	want := progress.Range{Start: 3 * rangeSize, End: 4 * rangeSize}
	if len(retries) != 1 || retries[0].Range != want || retries[0].Offset != want.Start+1000 || retries[0].Op != "fetch" {
		t.Fatalf("retries %+v, want one of %s at its byte 1000", retries, want)
	}
	if len(resumes) != 1 || resumes[0].Range != want || resumes[0].Offset != want.Start+1000 || resumes[0].Attempt != 2 {
		t.Fatalf("resumes %+v, want one of %s at its byte 1000", resumes, want)
	}
	if fmt.Sprint(want) != "bytes 196608-262143" {
		t.Fatalf("Range.String() = %q", want)
	}
}

// A reader left open without reading holds its window of the copy-wide
// buffers; another blob of the same copy still moves, one range at a time
// outside the budget.
func TestParallelAbandonedReaderDoesNotStarveOthers(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 32*rangeSize)
	opts := Options{PullConnections: 2, MaxPullConnections: 2, PullRangeSize: rangeSize, Retry: fastRetry}
	opts.Observer = progress.Multi()
	src := newSource(s.source(), opts)
	ctx := context.Background()
	a, err := openFetched(ctx, s.desc, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(a, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // a's workers fill its window: every copy-wide buffer
	done := make(chan error, 1)
	go func() {
		b, err := openFetched(ctx, s.desc, src, opts)
		if err != nil {
			done <- err
			return
		}
		defer b.Close()
		got, err := io.ReadAll(b)
		if err == nil && !bytes.Equal(got, s.blob) {
			err = fmt.Errorf("read %d bytes, differ", len(got))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second blob waited for buffers an idle reader holds")
	}
}

// readSlowly reads rc the way a slow destination does: a millisecond for
// every 8 KiB.
func readSlowly(rc io.Reader) ([]byte, error) {
	var out bytes.Buffer
	buf := make([]byte, 8<<10)
	for {
		n, err := rc.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
		time.Sleep(time.Millisecond)
	}
}

// readAdaptive reads s's blob with the zero pull settings but rangeSize.
func readAdaptive(t *testing.T, s *rangeServer, rangeSize int64, read func(io.Reader) ([]byte, error)) []progress.Event {
	t.Helper()
	return readWithEvents(t, s, Options{PullRangeSize: rangeSize, Retry: fastRetry}, read)
}

// readWithEvents reads s's blob with opts through read, checks the bytes,
// and returns the events.
func readWithEvents(t *testing.T, s *rangeServer, opts Options, read func(io.Reader) ([]byte, error)) []progress.Event {
	t.Helper()
	var mu sync.Mutex
	var got []progress.Event
	opts.Observer = progress.Func(func(e progress.Event) {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	})
	rc, err := OpenURL(context.Background(), s.source(), s.desc, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := read(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, s.blob) {
		t.Fatalf("read %d bytes: %v", len(b), err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got)
}

func notesOf(evs []progress.Event) []string {
	var notes []string
	for _, e := range evs {
		if e.Kind == progress.Note {
			notes = append(notes, e.Reason)
		}
	}
	return notes
}

// With PullConnections left at 0 a blob's first ranges come over one
// connection in requests of 1 and 2 ranges, timed (here both of them:
// each is over in milliseconds). A reader that waits on them for less than
// half the time (the destination, not the link, is the limit) gets the
// rest over one connection in one request: never two requests at once, and
// no attempt counted for the planned reconnects.
func TestAdaptivePullKeepsOneConnectionWhenTheReaderIsTheLimit(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 2*measureRanges*rangeSize)
	got := readAdaptive(t, s, rangeSize, readSlowly)
	s.mu.Lock()
	starts, peak := append([]int64(nil), s.starts...), s.maxInFlight
	s.mu.Unlock()
	want := []int64{0, rangeSize, 3 * rangeSize}
	if fmt.Sprint(starts) != fmt.Sprint(want) || peak != 1 {
		t.Fatalf("requests at %v, %d at once; want %v (1 and 2 ranges measured, then the rest), one at a time", starts, peak, want)
	}
	for _, e := range got {
		if e.Kind == progress.Retrying || e.Kind == progress.Resumed || e.Attempt > 1 {
			t.Errorf("a planned reconnect reported as a retry: %+v", e)
		}
	}
	if notes := notesOf(got); len(notes) != 1 || !strings.Contains(notes[0], "one connection keeps up") {
		t.Fatalf("notes %q; want one saying one connection keeps up", notes)
	}
}

// A link that caps each connection: the reader waits on the measured
// ranges nearly all the time, and the rest comes in ranges over several
// connections at once.
func TestAdaptivePullSplitsWhenTheLinkIsTheLimit(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 16*rangeSize)
	s.pace = time.Millisecond // 4 KiB per millisecond per connection
	notes := notesOf(readAdaptive(t, s, rangeSize, io.ReadAll))
	s.mu.Lock()
	starts, peak := append([]int64(nil), s.starts...), s.maxInFlight
	s.mu.Unlock()
	// 16 ms a range: requests of 1 and 2 ranges are measured, then 13
	// ranges are split.
	if len(starts) != 2+13 || starts[0] != 0 {
		t.Fatalf("requests at %v; want the 2 measured requests, then one request per range", starts)
	}
	if peak < 2 {
		t.Fatalf("at most %d request(s) at once; want several", peak)
	}
	if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "fetching the rest in ranges") }) {
		t.Fatalf("notes %q: none of the split", notes)
	}
}

// The measurement decides once the ranges add up to measureFor or number
// measureRanges, on the share of the time the reader waited, and then
// holds.
func TestLinkMeasureDecides(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name    string
		reqs    [][2]time.Duration // waited, wall
		decides int                // the request that decides, from 1; 0: none
		many    bool
	}{
		{"slow link, one long request", [][2]time.Duration{{240 * ms, 250 * ms}}, 1, true},
		{"reader-bound, one long request", [][2]time.Duration{{60 * ms, 250 * ms}}, 1, false},
		{"two fast requests decide", [][2]time.Duration{{30 * ms, 80 * ms}, {90 * ms, 130 * ms}}, 2, true},
		{"half is enough", [][2]time.Duration{{100 * ms, 200 * ms}}, 1, true},
		{"very fast requests stop at measureRanges", [][2]time.Duration{{ms, 10 * ms}, {ms, 10 * ms}, {ms, 10 * ms}}, 2, false},
		{"undecided", [][2]time.Duration{{ms, 10 * ms}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m linkMeasure
			decidedAt := 0
			var sizes []int
			for i, r := range tc.reqs {
				n := m.next()
				sizes = append(sizes, n)
				if now, _ := m.add(r[0], r[1], n, 0); now {
					if decidedAt != 0 {
						t.Fatalf("decided again at range %d", i+1)
					}
					decidedAt = i + 1
				}
			}
			decided, many := m.outcome()
			if decidedAt != tc.decides || decided != (tc.decides != 0) || many != tc.many {
				t.Fatalf("decided at request %d (%v), many %v; want request %d, many %v", decidedAt, decided, many, tc.decides, tc.many)
			}
			for i, n := range sizes[:min(len(sizes), 2)] {
				if n != 1<<i {
					t.Fatalf("requests of %v ranges; want 1, then 2", sizes)
				}
			}
		})
	}
}

// A link capped in total, not per connection: the measured requests wait
// on it (so the blob is split), but eight connections share what one had.
// Once the reader has read a range per connection without beating one
// connection by splitGain, no more ranges are taken; those taken are read,
// and the rest comes over one connection. No byte is asked for twice.
func TestAdaptivePullGoesBackToOneConnectionWithoutGain(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 40*rangeSize)
	s.pace, s.shared = time.Millisecond, true
	notes := notesOf(readAdaptive(t, s, rangeSize, io.ReadAll))
	has := func(sub string) bool {
		return slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, sub) })
	}
	if split, back := has("fetching the rest in ranges"), has("going on over one connection"); !split || !back {
		t.Fatalf("split %v, back to one connection %v; want both", split, back)
	}
	s.mu.Lock()
	starts := append([]int64(nil), s.starts...)
	s.mu.Unlock()
	slices.Sort(starts)
	for i := 1; i < len(starts); i++ {
		if starts[i] == starts[i-1] {
			t.Fatalf("requests at %v: %d asked for twice", starts, starts[i])
		}
	}
	// 2 measured requests (3 ranges), the ranges the split took (at
	// least one per connection, at most the window beyond), then one.
	last := starts[len(starts)-1]
	if n := len(starts); n < 2+DefaultPullConnections+1 || n > 2+3*DefaultPullConnections+1 || last >= 40*rangeSize-rangeSize {
		t.Fatalf("requests at %v: want the measured ones, the split's ranges, then the rest in one", starts)
	}
}

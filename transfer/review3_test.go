package transfer

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"

	"github.com/sturdyoci/sturdy/progress"
)

// review3Blobs serves the blobs of a memory store by digest at
// /<digest> with net/http's own Range implementation (http.ServeContent).
// hook, if set, runs first and may answer instead (returning true) or
// change the request.
type review3Blobs struct {
	blobs map[digest.Digest][]byte
	srv   *httptest.Server
	hook  func(w http.ResponseWriter, r *http.Request, blob []byte) bool
	hits  atomic.Int64
}

func newReview3Blobs(t *testing.T, store *memory.Store, root ocispec.Descriptor) *review3Blobs {
	t.Helper()
	s := &review3Blobs{blobs: map[digest.Digest][]byte{}}
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		b, err := content.FetchAll(context.Background(), store, d)
		if err != nil {
			t.Fatal(err)
		}
		s.blobs[d.Digest] = b
		children, err := content.Successors(context.Background(), store, d)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range children {
			walk(c)
		}
	}
	walk(root)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		d, err := digest.Parse(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, "bad digest", http.StatusBadRequest)
			return
		}
		blob, ok := s.blobs[d]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if s.hook != nil && s.hook(w, r, blob) {
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *review3Blobs) source() *URLSource {
	return &URLSource{URL: func(_ context.Context, d ocispec.Descriptor) (string, error) {
		return s.srv.URL + "/" + d.Digest.String(), nil
	}, Client: s.srv.Client()}
}

// The docs (README "Dead or hung", transfer/doc.go "Mirrors"): a hung
// mirror is set aside after its first stall and costs one StallTimeout
// for the whole copy. A mirror that accepts the connection and never
// sends response headers (a pull-through cache waiting on its upstream)
// is cut by the healing reader's watchdog through the attempt's context;
// sourceChain.openFrom then sees !passable(ctx) and returns the error
// without calling failed() or passOn(). The mirror is never set aside and
// the next attempt starts on it again: every attempt of every blob stalls
// on it, and the blobs fail although the origin is healthy.
func TestReview3MirrorHungBeforeHeadersIsNeverSetAside(t *testing.T) {
	checkLeaks(t)
	src, root, _ := artifact(t, 64<<10, 64<<10)
	mirrorSrv := newReview3Blobs(t, src, root)
	mirrorSrv.hook = func(_ http.ResponseWriter, r *http.Request, _ []byte) bool {
		<-r.Context().Done() // headers never come
		return true
	}
	const stall = 150 * time.Millisecond
	var mu sync.Mutex
	var notes []string
	opts := Options{Retry: fastRetry, StallTimeout: stall, Concurrency: 1,
		Mirrors: []Mirror{{Name: "hung", Target: mirrorSrv.source()}},
		Observer: progress.Func(func(e progress.Event) {
			if e.Kind == progress.Note {
				mu.Lock()
				notes = append(notes, e.Reason)
				mu.Unlock()
			}
		})}
	opts.Retry.MaxAttempts = 3
	start := time.Now()
	_, err := Copy(context.Background(), src, "v1", memory.New(), "", opts)
	took := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		t.Fatalf("copy failed with a healthy origin after %v; the hung mirror was asked %d times (want 1); notes %q:\n%v",
			took, mirrorSrv.hits.Load(), notes, err)
	}
	if n := mirrorSrv.hits.Load(); n != 1 || took > 3*stall {
		t.Fatalf("the hung mirror was asked %d times and the copy took %v; want once and about one StallTimeout (%v)", n, took, stall)
	}
}

// failingOrigin is an origin that is down: every request is refused.
type failingOrigin struct {
	*memory.Store
	calls atomic.Int64
}

func (f *failingOrigin) Fetch(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
	f.calls.Add(1)
	return nil, syscall.ECONNREFUSED
}

func (f *failingOrigin) Resolve(context.Context, string) (ocispec.Descriptor, error) {
	f.calls.Add(1)
	return ocispec.Descriptor{}, syscall.ECONNREFUSED
}

func (f *failingOrigin) Exists(context.Context, ocispec.Descriptor) (bool, error) {
	f.calls.Add(1)
	return false, syscall.ECONNREFUSED
}

// Options.Mirrors doc: mirrors are tried "for every blob and every
// manifest fetched by digest"; doc.go: "a copy by digest resolves its
// root on the mirrors too, so it goes on while the origin is down". With a
// shared OCI layout as the mirror (the README's own set-up), the root
// resolves on the layout (content.Resolver, no bytes), and copyNode then
// reads the manifest with readManifest(g.src) -- the origin, not the
// chain. With the origin down the copy by digest fails. (Child manifests
// of an index, and a Wrap's Fetch of a manifest, take the same path.)
func TestReview3CopyByDigestWithLayoutMirrorReadsManifestFromOrigin(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	full, root, _ := artifact(t, 4096, 4096)
	layout, err := oci.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oras.Copy(ctx, full, "v1", layout, "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	origin := &failingOrigin{Store: full}
	opts := Options{Retry: fastRetry, Mirrors: []Mirror{{Name: "layout", Target: layout}}}
	opts.Retry.MaxAttempts = 2
	dst := memory.New()
	got, err := Copy(ctx, origin, root.Digest.String(), dst, "v1", opts)
	if err != nil {
		t.Fatalf("copy by digest with the origin down and every byte on the layout mirror: %v (origin asked %d times)", err, origin.calls.Load())
	}
	if got.Digest != root.Digest {
		t.Fatalf("root %s", got.Digest)
	}
}

// Design rule 12: "Degrade, never die, on protocol differences (... 416 on
// a ranged read ...): a slower path with a progress Note, not a failed
// blob." A server (a CDN edge) that answers a later range with the whole
// blob (200) makes fetch return retrypolicy.Transient(errNotParallel);
// the healing reader spends one of the blob's attempts on it (and sleeps
// a backoff, 5 s by default) before going on over one connection. With
// MaxAttempts 1 ("no retry") the blob fails, although the server never
// failed.
func TestReview3ParallelDegradeCostsAnAttempt(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 12*rangeSize)
	s.hold = func(start int64, _ http.ResponseWriter, r *http.Request) {
		if start > 0 {
			r.Header.Del("Range") // this edge ignores Range past the first range: 200
		}
	}
	var mu sync.Mutex
	var retries []string
	opts := Options{PullConnections: 4, PullRangeSize: rangeSize, Retry: fastRetry, Observer: progress.Func(func(e progress.Event) {
		if e.Kind == progress.Retrying {
			mu.Lock()
			retries = append(retries, e.Reason+": "+errString(e.Err))
			mu.Unlock()
		}
	})}
	opts.Retry.MaxAttempts = 1
	rc, err := OpenURL(context.Background(), s.source(), s.desc, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("a server that stopped serving ranges failed the blob (MaxAttempts 1): %v", err)
	}
	if !bytes.Equal(b, s.blob) {
		t.Fatal("bytes differ")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(retries) != 0 {
		t.Fatalf("falling back to one connection was reported as a retry: %q", retries)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// cutWriter lets left bytes through, then drops the connection.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if len(p) >= c.left {
		c.ResponseWriter.Write(p[:c.left])
		http.NewResponseController(c.ResponseWriter).Flush()
		panic(http.ErrAbortHandler)
	}
	c.left -= len(p)
	return c.ResponseWriter.Write(p)
}

// slowWriter writes in small flushed pieces at about rate bytes/s: a
// steady link, never silent for long.
type slowWriter struct {
	http.ResponseWriter
	piece int
	pause time.Duration
}

func (s *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), s.piece)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		http.NewResponseController(s.ResponseWriter).Flush()
		p = p[k:]
		time.Sleep(s.pause)
	}
	return n, nil
}

// A mirror breaks mid-blob; the origin ignores Range (200). chainBody
// .switchSource drops the bytes already given with io.CopyN on the
// origin's raw body inside one Read: the healing reader's watchdog sees
// no byte move for as long as the drop takes (minutes for a 60 GB offset
// at 100 MB/s, against a 1 min StallTimeout), cuts the origin, which was
// sending all along, as "stalled", and the blob pays an attempt and a
// reopen. The dropped bytes are not counted as wire bytes or as the
// origin's in Event.Sources either (the path in healingReader.drop does
// count them).
func TestReview3MirrorSwitchDropIsUnwatched(t *testing.T) {
	checkLeaks(t)
	src, root, layers := artifact(t, 1<<20)
	layer := layers[0]
	const cutAt = 768 << 10
	mirrorSrv := newReview3Blobs(t, src, root)
	mirrorSrv.hook = func(w http.ResponseWriter, r *http.Request, blob []byte) bool {
		if !strings.HasSuffix(r.URL.Path, layer.Digest.String()) {
			return false
		}
		http.ServeContent(&cutWriter{ResponseWriter: w, left: cutAt}, r, "", time.Time{}, bytes.NewReader(blob))
		return true
	}
	originSrv := newReview3Blobs(t, src, root)
	originSrv.hook = func(w http.ResponseWriter, r *http.Request, blob []byte) bool {
		r.Header.Del("Range") // an origin that ignores Range
		// ~1.6 MB/s, a piece every 10 ms: never silent for the StallTimeout.
		http.ServeContent(&slowWriter{ResponseWriter: w, piece: 16 << 10, pause: 10 * time.Millisecond}, r, "", time.Time{}, bytes.NewReader(blob))
		return true
	}
	var mu sync.Mutex
	var retries []string
	var completed progress.Event
	opts := Options{Retry: fastRetry, StallTimeout: 200 * time.Millisecond, PullConnections: 1,
		Mirrors: []Mirror{{Name: "mirror", Target: mirrorSrv.source()}},
		Observer: progress.Func(func(e progress.Event) {
			if e.Desc.Digest != layer.Digest {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch e.Kind {
			case progress.Retrying:
				retries = append(retries, e.Reason+": "+errString(e.Err))
			case progress.Completed:
				completed = e
			}
		})}
	if err := CopyGraph(context.Background(), originSrv.source(), memory.New(), root, opts); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(retries) != 0 {
		t.Errorf("the origin, sending steadily, was cut while the bytes before the mirror's cut were dropped: %q", retries)
	}
	// Bytes that crossed: cutAt from the mirror, the whole blob from the origin (cutAt of it dropped).
	if completed.Sources[OriginName] < layer.Size || completed.Wire < layer.Size+cutAt {
		t.Errorf("Completed: Wire %d, Sources %v; want origin >= %d (the drop crossed the wire) and Wire >= %d",
			completed.Wire, completed.Sources, layer.Size, layer.Size+cutAt)
	}
}

// A mirror that sends its headers and then stalls is cut by the healing
// reader's watchdog through the attempt's context; chainBody sees
// ctx.Err() and hands the error to the healing reader, which spends one of
// the blob's attempts on it and sleeps a backoff before reopening on the
// origin. The docs promise a hung mirror costs one StallTimeout; it costs
// an attempt and an InitialBackoff (5 s by default) too, and with
// MaxAttempts 1 ("no retry") the blob fails although the origin is fine.
func TestReview3MirrorStallCostsTheBlobAnAttempt(t *testing.T) {
	checkLeaks(t)
	src, root, _ := artifact(t, 64<<10)
	mirrorSrv := newReview3Blobs(t, src, root)
	mirrorSrv.hook = func(w http.ResponseWriter, r *http.Request, blob []byte) bool {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // headers, then silence
		return true
	}
	opts := Options{Retry: fastRetry, StallTimeout: 150 * time.Millisecond,
		Mirrors: []Mirror{{Name: "hung", Target: mirrorSrv.source()}}}
	opts.Retry.MaxAttempts = 1
	if _, err := Copy(context.Background(), src, "v1", memory.New(), "", opts); err != nil {
		t.Fatalf("a mirror that stalled failed the copy (MaxAttempts 1, healthy origin): %v", err)
	}
}

// progress.Event.Range doc: a range's Retrying/Resumed "concerns that
// range only: ... Attempt counts the range's attempts". The Tracker takes
// e.Attempt into BlobState.Attempts before it looks at Range, so one
// range retried once makes a blob that never retried show Attempts 2
// (and a blob whose ranges were each retried 5 times shows 6, as if it
// had used its MaxAttempts).
func TestReview3TrackerCountsRangeAttemptsAsBlobAttempts(t *testing.T) {
	checkLeaks(t)
	const rangeSize = 64 << 10
	s := newRangeServer(t, 8*rangeSize)
	var failed atomic.Bool
	s.hold = func(start int64, w http.ResponseWriter, r *http.Request) {
		if start == 3*rangeSize && failed.CompareAndSwap(false, true) {
			w.Header().Set("Content-Range", "bytes "+strconv.Itoa(int(start))+"-"+strconv.Itoa(int(start+rangeSize-1))+"/"+strconv.Itoa(int(s.desc.Size)))
			w.Header().Set("Content-Length", strconv.Itoa(rangeSize))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(s.blob[start : start+1000])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
	}
	tr := progress.NewTracker()
	rc, err := OpenURL(context.Background(), s.source(), s.desc, Options{PullConnections: DefaultPullConnections, PullRangeSize: rangeSize, Retry: fastRetry, Observer: tr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	snap := tr.Snapshot()
	if len(snap.Blobs) != 1 {
		t.Fatalf("%d blobs", len(snap.Blobs))
	}
	if b := snap.Blobs[0]; b.Attempts != 1 || b.Retries != 1 {
		t.Fatalf("Attempts %d, Retries %d; want 1 attempt at the blob and 1 range retry", b.Attempts, b.Retries)
	}
}

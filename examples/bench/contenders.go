package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// Contenders. Each runs in its own process (see runWorker), so that its
// peak RSS is its own.
const (
	// oras.Copy with a remote.Repository whose client is a plain
	// auth.Client over http.DefaultClient: no retrying transport.
	cOras = "oras"
	// oras.Copy with auth.DefaultClient, which wraps oras-go's
	// retry.DefaultClient (5 retries of GET/HEAD/POST and rewindable
	// bodies, 200 ms to 3 s, Retry-After only on 429, clamped to 3 s).
	cOrasDC = "oras-dc"
	// A per-blob loop of 6 attempts around oras-go's Fetch and Push, each
	// attempt from byte 0 (how modctl retries today).
	cRetry6 = "retry6"
	// transfer.Copy. Its pull settings are left at zero (8 connections
	// per blob in 8 MiB ranges, 16 per Copy).
	cSturdy = "sturdy"
	// transfer.Copy with PullConnections: 1: every blob over one stream,
	// as before parallel ranged pulls. Pushes are the same as sturdy's, so
	// it only pulls.
	cSturdy1 = "sturdy-1conn"
	// transfer.Copy with a StateDir shared by the runs of a scenario: a
	// run killed and run again continues. Only in the killed scenario.
	cSturdyState = "sturdy-state"
)

// pullOnly reports whether a contender only runs pulls.
func pullOnly(contender string) bool { return contender == cSturdy1 }

var contenderLabels = map[string]string{
	cOras:        "oras-go `oras.Copy`, plain `auth.Client`",
	cOrasDC:      "oras-go `oras.Copy`, `auth.DefaultClient` (retry transport)",
	cRetry6:      "oras-go, 6 attempts per blob, restart from 0",
	cSturdy:      "sturdy `transfer.Copy`, zero pull settings (a blob of two ranges or more over 8 ranged connections where its first ranges, over one, show the link is the limit)",
	cSturdy1:     "sturdy `transfer.Copy` with `PullConnections: 1` (one stream per blob; pulls only)",
	cSturdyState: "sturdy `transfer.Copy` with a `StateDir` that the killed run and its re-run share (the killed scenario only)",
}

// job is what the parent asks a worker process to do.
type job struct {
	Contender   string
	Direction   string // "pull" (registry -> layout) or "push" (layout -> registry)
	Host        string
	Repo        string
	Tag         string
	Layout      string
	Deadline    time.Duration // the caller's context: stands in for "forever"
	Backoff     time.Duration // initial backoff of retry6 and sturdy
	MaxBackoff  time.Duration
	Stall       time.Duration // sturdy's StallTimeout
	Concurrency int           // blobs at once, every contender
	CPUProfile  string        // write a CPU profile of the copy here, if set
	// Mirror, if set, is a repository ("host/repo", plain HTTP) that
	// sturdy's contenders read content by digest from first
	// (transfer.Options.Mirrors, named "cache").
	Mirror string
	// StateDir is sturdy-state's transfer.Options.StateDir.
	StateDir string
}

// result is what a worker reports on stdout, as one JSON line.
type result struct {
	OK              bool
	Err             string
	Seconds         float64 // the copy alone, not process start-up
	PeakHeap        uint64  // bytes, sampled from runtime/metrics
	PeakRSS         int64   // bytes: VmHWM of the worker process
	Attempts        int     // retry6: attempts over all blobs
	MaxBlobAttempts int     // retry6: the most attempts one blob took
	Retries         int     // sturdy: Retrying events
	Resumes         int     // sturdy: Resumed events
	BackoffS        float64 // sturdy: time waited between attempts
	Sturdy          string  // sturdy's own summary, for the log
	RootMatch       bool
	// ClientWrote is every byte the client wrote into its connections
	// during the copy (headers and all requests included), as the kernel
	// accepted them: bytes still in socket buffers when a reset came, which
	// never reached the registry, are in it. See countingTransport.
	ClientWrote int64
	// Allocated is every heap byte allocated during the run (cumulative,
	// /gc/heap/allocs:bytes): buffers allocated once and reused stay
	// flat, buffers allocated per range grow with the blob. GCs counts
	// the garbage collections.
	Allocated, GCs uint64
	// Dials counts the connections the client opened during the copy.
	Dials int64
	// Sources is sturdy's Summary.Sources (bytes each source served) and
	// Reused its Summary.Reused (bytes a StateDir kept from a killed run).
	Sources map[string]int64 `json:",omitempty"`
	Reused  int64
}

const workerEnv = "STURDY_BENCH_WORKER"

// mirrorName names the pull-through cache among sturdy's sources.
const mirrorName = "cache"

// runWorker runs the job in the environment and prints its result. It is
// the whole life of a worker process.
func runWorker(spec string) int {
	var j job
	if err := json.Unmarshal([]byte(spec), &j); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	before := readMetrics()
	stopHeap, peak := sampleHeap()
	res := j.run()
	stopHeap()
	after := readMetrics()
	res.PeakHeap = *peak
	res.Allocated = after[0].Value.Uint64() - before[0].Value.Uint64()
	res.GCs = after[1].Value.Uint64() - before[1].Value.Uint64()
	res.PeakRSS = peakRSS()
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	return 0
}

// peakRSS returns the process's peak resident set (VmHWM). getrusage of
// the child is no use here: Go starts children with vfork semantics, and
// Linux folds the parent's RSS (the whole registry) into the child's
// ru_maxrss at exec. VmHWM belongs to the worker's own address space.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// readMetrics reads the heap bytes allocated and the GC cycles so far.
func readMetrics() []metrics.Sample {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s
}

// sampleHeap records the peak of live heap objects every 10 ms.
func sampleHeap() (stop func(), peak *uint64) {
	peak = new(uint64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > *peak {
				*peak = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }, peak
}

func (j job) run() result {
	ctx, cancel := context.WithTimeout(context.Background(), j.Deadline)
	defer cancel()

	// Every contender's client is what it would be without the counting,
	// over a transport that is http.DefaultTransport with a counting dialer.
	var wrote, dials atomic.Int64
	base := countingTransport(&wrote, &dials)
	var client remote.Client
	switch j.Contender {
	case cOras, cRetry6:
		// auth.Client over http.DefaultClient.
		client = &auth.Client{Client: &http.Client{Transport: base}, Cache: auth.NewCache()}
	case cOrasDC:
		// auth.DefaultClient: retry.DefaultClient (a retry.Transport over
		// http.DefaultTransport), oras-go's User-Agent, the shared cache.
		client = &auth.Client{
			Client: &http.Client{Transport: retry.NewTransport(base)},
			Header: http.Header{"User-Agent": {"oras-go"}},
			Cache:  auth.DefaultCache,
		}
	case cSturdy, cSturdy1, cSturdyState:
		client = transfer.NewClient(&http.Client{Transport: base}, nil) // the same as cOras's
	default:
		return result{Err: "unknown contender " + j.Contender}
	}
	repo, err := remote.NewRepository(j.Host + "/" + j.Repo)
	if err != nil {
		return result{Err: err.Error()}
	}
	repo.PlainHTTP = true
	repo.Client = client
	layout, err := oci.New(j.Layout)
	if err != nil {
		return result{Err: err.Error()}
	}
	var src oras.ReadOnlyTarget = repo
	var dst oras.Target = layout
	if j.Direction == "push" {
		src, dst = layout, repo
	}

	if j.CPUProfile != "" {
		if f, err := os.Create(j.CPUProfile); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	var res result
	var tracker *progress.Tracker
	start := time.Now()
	var root ocispec.Descriptor
	switch j.Contender {
	case cOras, cOrasDC:
		opts := oras.DefaultCopyOptions
		opts.Concurrency = j.Concurrency
		root, err = oras.Copy(ctx, src, j.Tag, dst, j.Tag, opts)
	case cRetry6:
		root, res.Attempts, res.MaxBlobAttempts, err = copyRestarting(ctx, src, dst, j.Tag, j)
	case cSturdy, cSturdy1, cSturdyState:
		tracker = progress.NewTracker()
		opts := transfer.Options{
			Retry:        retrypolicy.Config{InitialBackoff: j.Backoff, MaxBackoff: j.MaxBackoff},
			Concurrency:  j.Concurrency,
			StallTimeout: j.Stall,
			Observer:     tracker,
		}
		if j.Contender == cSturdy1 {
			opts.PullConnections = 1
		}
		if j.Contender == cSturdyState {
			opts.StateDir = j.StateDir
		}
		if j.Mirror != "" {
			m, err := remote.NewRepository(j.Mirror)
			if err != nil {
				return result{Err: err.Error()}
			}
			m.PlainHTTP = true
			m.Client = client
			opts.Mirrors = []transfer.Mirror{{Name: mirrorName, Target: m}}
		}
		root, err = transfer.Copy(ctx, src, j.Tag, dst, j.Tag, opts)
	}
	res.Seconds = time.Since(start).Seconds()
	res.ClientWrote = wrote.Load() // the copy alone, not the check below
	res.Dials = dials.Load()
	if tracker != nil {
		s := tracker.Summary()
		res.Retries, res.Resumes, res.BackoffS = s.Retries, s.Resumes, s.Backoff.Seconds()
		res.Sturdy = s.String()
		res.Sources, res.Reused = s.Sources, s.Reused
	}
	if err != nil {
		res.Err = err.Error()
		return res
	}
	// Check the result from the destination's side, not the copier's.
	got, err := dst.Resolve(context.Background(), j.Tag)
	if err != nil {
		res.Err = "copy returned, but the tag does not resolve: " + err.Error()
		return res
	}
	res.RootMatch = got.Digest == root.Digest
	res.OK = res.RootMatch
	if !res.OK {
		res.Err = fmt.Sprintf("tag resolves to %s, copy returned %s", got.Digest, root.Digest)
	}
	return res
}

// countingTransport returns a clone of http.DefaultTransport whose
// connections add every byte written into them to n, and that counts the
// connections it opens in dials.
func countingTransport(n, dials *atomic.Int64) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// What sturdy gives a repository on http.DefaultTransport (an idle
	// pool for its ranged connections); one connection at a time, oras-go
	// never uses more than the default two.
	t.MaxIdleConnsPerHost = 64
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		return &countingConn{Conn: c, n: n}, nil
	}
	return t
}

// countingConn counts what the kernel accepted from the client: a write
// returns once the bytes are in the socket's send buffer, so bytes a reset
// later throws away (in the client's send buffer or the registry's receive
// buffer) are counted, as they were sent.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// ReadFrom keeps the connection's own ReadFrom (sendfile from a file
// body on a *net.TCPConn), so the counting does not change how a body is
// sent.
func (c *countingConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		k, err := rf.ReadFrom(r)
		c.n.Add(k)
		return k, err
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// copyRestarting is the restart-from-zero contender: what modctl does
// today, built from oras-go's own Fetch and Push. Every blob gets a loop of
// 6 attempts; each attempt is skipped if the blob already exists, otherwise
// it fetches the blob from byte 0 and pushes it whole, under its own
// deadline (size / 10 MiB/s x 2, clamped to [5 min, 8 h], modctl's
// formula). Any error is retried (modctl matches error strings; nothing
// here is classified) except the end of the caller's context; Retry-After
// is not read. A failing blob does not cancel its siblings; the manifest is
// pushed and tagged only when every blob is in place.
func copyRestarting(ctx context.Context, src oras.ReadOnlyTarget, dst oras.Target, tag string, j job) (root ocispec.Descriptor, attempts, maxBlob int, err error) {
	var mu sync.Mutex
	// loop runs fn up to 6 times and returns the attempts it made.
	loop := func(size int64, fn func(context.Context) error) (int, error) {
		var err error
		attempt := 1
		for ; ; attempt++ {
			mu.Lock()
			attempts++
			mu.Unlock()
			actx, cancel := context.WithTimeout(ctx, retrypolicy.ComputePerAttemptTimeout(size))
			err = fn(actx)
			cancel()
			if err == nil || errors.Is(err, errdef.ErrAlreadyExists) {
				return attempt, nil
			}
			if ctx.Err() != nil || attempt == 6 {
				return attempt, err
			}
			// Exponential backoff with ±50% jitter, as sturdy's.
			d := min(j.Backoff<<(attempt-1), j.MaxBackoff)
			d = time.Duration(float64(d) * (0.5 + rand.Float64()))
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}

	if _, err := loop(0, func(ctx context.Context) (err error) {
		root, err = src.Resolve(ctx, tag)
		return err
	}); err != nil {
		return root, attempts, maxBlob, fmt.Errorf("resolve: %w", err)
	}
	var raw []byte
	if _, err := loop(root.Size, func(ctx context.Context) (err error) {
		raw, err = content.FetchAll(ctx, src, root)
		return err
	}); err != nil {
		return root, attempts, maxBlob, fmt.Errorf("fetch manifest: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return root, attempts, maxBlob, err
	}
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)

	sem := make(chan struct{}, max(j.Concurrency, 1))
	var wg sync.WaitGroup
	var errs []error
	for _, d := range blobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, err := loop(d.Size, func(ctx context.Context) error {
				ok, err := dst.Exists(ctx, d)
				if err != nil || ok {
					return err
				}
				rc, err := src.Fetch(ctx, d)
				if err != nil {
					return err
				}
				defer rc.Close()
				return dst.Push(ctx, d, rc)
			})
			mu.Lock()
			maxBlob = max(maxBlob, n)
			if err != nil {
				errs = append(errs, fmt.Errorf("blob %s: %w", d.Digest, err))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return root, attempts, maxBlob, err
	}
	_, err = loop(root.Size, func(ctx context.Context) error {
		if rp, ok := dst.(registry.ReferencePusher); ok {
			return rp.PushReference(ctx, root, bytes.NewReader(raw), tag)
		}
		if err := dst.Push(ctx, root, bytes.NewReader(raw)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return err
		}
		return dst.Tag(ctx, root, tag)
	})
	return root, attempts, maxBlob, err
}

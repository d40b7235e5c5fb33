package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"oras.land/oras-go/v2"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

var allScenarios = []string{"clean", "resets", "503", "stall", "bandwidth", "small", "memory", "capped-parallel", "capped-parallel-mid", "capped-resets", "mirror", "killed"}

// scenario is one row group of the report: an artifact, the directions it
// is moved in, and the faults on the wire.
type scenario struct {
	name       string
	title      string
	fault      string // what happens on the wire, for the report
	art        *artifact
	directions []string
	reps       int
	deadline   time.Duration
	contenders []string // see contendersFor
	// inject sets the faults of a run; nil means a clean link.
	inject func(reg *registrytest.Registry, direction string)
	// mirror: sturdy pulls with the pull-through cache as a mirror, and
	// the cache's counters are read too.
	mirror bool
	// kill: every run is killed once half the payload has crossed, then
	// run again (see runKilled).
	kill bool
}

// contendersFor is the scenario's contenders that run in direction dir:
// a pull-only contender sits out pushes.
func (sc *scenario) contendersFor(dir string) []string {
	var out []string
	for _, c := range sc.contenders {
		if dir == "pull" || !pullOnly(c) {
			out = append(out, c)
		}
	}
	return out
}

// world is what the scenarios share: the registry, the artifacts on disk
// and the repositories seeded for pulls.
type world struct {
	cfg  config
	reg  *registrytest.Registry
	tmp  string
	self string // this executable, re-run as a worker
	// artifacts by name; srcRepo[name] is where pulls read it from.
	arts    map[string]*artifact
	srcRepo map[string]string
	// cache is distribution's pull-through cache of reg (the mirror
	// scenario), warmed with the mirror artifact; nil if not needed.
	cache *registrytest.Registry
}

func runBench(ctx context.Context, cfg config) (*report, error) {
	for _, s := range cfg.Scenarios {
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(allScenarios, ","))
		}
	}
	for _, c := range cfg.Contenders {
		if _, ok := contenderLabels[c]; !ok {
			return nil, fmt.Errorf("unknown contender %q", c)
		}
	}
	if !slices.Contains(cfg.Contenders, cSturdy) {
		return nil, errors.New("sturdy must be among the contenders: times are reported as ratios to it")
	}
	cfg.MemSize = max(cfg.Size/4, mib)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "sturdy-bench-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// Cuts of an upload body as on a real network: the client is reset at
	// once, the registry keeps the bytes in flight (see WithRealisticCuts).
	reg, err := registrytest.Start(registrytest.WithRealisticCuts(0, 0))
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	w := &world{cfg: cfg, reg: reg, tmp: tmp, self: self, arts: map[string]*artifact{}, srcRepo: map[string]string{}}

	began := time.Now()
	scens, err := w.scenarios(ctx)
	if w.cache != nil {
		defer w.cache.Close()
	}
	if err != nil {
		return nil, err
	}
	// Let the page cache write back what the data preparation wrote, so it
	// does not compete with the first measured runs.
	syscall.Sync()
	if cfg.Warmup && len(scens) > 0 {
		// One unmeasured pull: the registry's blob enters the page cache
		// and the registry's code paths warm up before any contender.
		warm := *scens[0]
		warm.inject = nil
		run := w.runOne(ctx, &warm, "pull", cSturdy, -1)
		cfg.Log("warm-up pull: %s", run.logLine())
	}
	cfg.Log("data ready in %s", time.Since(began).Round(time.Millisecond))

	rep := &report{cfg: cfg, started: began}
	for _, sc := range scens {
		for r := 0; r < sc.reps; r++ {
			for _, dir := range sc.directions {
				// Interleaved: each repetition starts with another contender.
				order := rotate(sc.contendersFor(dir), r)
				for _, c := range order {
					if err := ctx.Err(); err != nil {
						return nil, err
					}
					run := w.runOne(ctx, sc, dir, c, r)
					rep.runs = append(rep.runs, run)
					cfg.Log("%-9s %-4s %-7s rep %d: %s", sc.name, dir, c, r+1, run.logLine())
				}
			}
		}
	}
	rep.scenarios = scens
	rep.elapsed = time.Since(began)
	rep.render()
	return rep, nil
}

func rotate(s []string, n int) []string {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

// scenarios builds the artifacts the chosen scenarios need and describes
// each scenario's faults.
func (w *world) scenarios(ctx context.Context) ([]*scenario, error) {
	cfg := w.cfg
	want := func(name string) bool { return slices.Contains(cfg.Scenarios, name) }
	needSingle := want("clean") || want("resets") || want("503") || want("stall") || want("memory")
	var single, mid, small, capped, cappedMid, mirrored *artifact
	var err error
	needSingle = needSingle || want("killed")
	if want("mirror") {
		if mirrored, err = w.artifact(ctx, "mirror", 6, []int64{cfg.Size}); err != nil {
			return nil, err
		}
		if err := w.warmCache(ctx, mirrored); err != nil {
			return nil, err
		}
	}
	if needSingle {
		if single, err = w.artifact(ctx, "single", 1, []int64{cfg.Size}); err != nil {
			return nil, err
		}
	}
	if want("memory") || want("bandwidth") {
		if mid, err = w.artifact(ctx, "mid", 2, []int64{cfg.MemSize}); err != nil {
			return nil, err
		}
	}
	if want("capped-parallel") || want("capped-resets") {
		if capped, err = w.artifact(ctx, "capped", 4, []int64{cfg.CappedSize}); err != nil {
			return nil, err
		}
	}
	if want("capped-parallel-mid") {
		if cappedMid, err = w.artifact(ctx, "capmid", 5, []int64{cfg.CappedMidSize}); err != nil {
			return nil, err
		}
	}
	if want("small") {
		sizes := make([]int64, cfg.SmallBlobs)
		for i := range sizes {
			sizes[i] = cfg.SmallBlobSize
		}
		if small, err = w.artifact(ctx, "small", 3, sizes); err != nil {
			return nil, err
		}
	}
	both := []string{"pull", "push"}
	// only is the chosen contenders among names, in the order chosen.
	only := func(names ...string) []string {
		var out []string
		for _, c := range cfg.Contenders {
			if slices.Contains(names, c) {
				out = append(out, c)
			}
		}
		return out
	}
	// sturdy-1conn is there for the parallel pull: the clean link and the
	// capped scenarios.
	all := only(cOras, cOrasDC, cRetry6, cSturdy)
	capBW := cfg.CappedBandwidth
	// One connection at the cap takes size/capBW; a deadline well past it.
	cappedDeadline := func(size int64) time.Duration {
		return max(cfg.Deadline, 3*time.Duration(float64(size)/float64(capBW)*float64(time.Second)))
	}
	var out []*scenario
	for _, name := range cfg.Scenarios {
		sc := &scenario{name: name, art: single, directions: both, reps: 1, deadline: cfg.Deadline, contenders: all}
		switch name {
		case "clean":
			sc.title = "Clean link"
			sc.fault = "no faults"
			sc.reps = cfg.Reps
			sc.contenders = only(cOras, cOrasDC, cRetry6, cSturdy, cSturdy1)
		case "resets":
			period := cfg.ResetPeriod
			layer := single.layers[0].Digest
			sc.title = "Resets every " + fmtBytes(period)
			sc.fault = fmt.Sprintf("TCP RST at every multiple of %s in blob coordinates (`ResetEvery`), on every blob GET (pull) and every upload PATCH/PUT body (push). "+
				"Push cuts are realistic (`WithRealisticCuts`, defaults): the client is reset at once, while the registry goes on to receive up to %s in flight and keeps it, "+
				"its handler failing %s later", fmtBytes(period), fmtBytes(registrytest.DefaultInFlight), registrytest.DefaultCutLag)
			sc.inject = func(reg *registrytest.Registry, dir string) {
				if dir == "pull" {
					reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Action: registrytest.ResetEvery(period)})
				} else {
					reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch | registrytest.UploadPut, Action: registrytest.ResetEvery(period)})
				}
			}
		case "503":
			n, ra := cfg.Bursts, cfg.RetryAfter
			layer := single.layers[0].Digest
			sc.title = fmt.Sprintf("%d x 503 with Retry-After: %s", n, ra)
			sc.fault = fmt.Sprintf("the first %d blob GETs of the layer (pull) or the first %d upload POSTs (push) get `503 UNAVAILABLE` with `Retry-After: %d`", n, n, int(ra.Seconds()))
			sc.inject = func(reg *registrytest.Registry, dir string) {
				action := registrytest.Respond(503).WithRetryAfter(ra)
				if dir == "pull" {
					reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Times: n, Action: action})
				} else {
					reg.Inject(registrytest.Rule{Kind: registrytest.UploadPost, Times: n, Action: action})
				}
			}
		case "stall":
			layer := single.layers[0].Digest
			pullAt, pushAt := cfg.Size/2, cfg.Size*5/8
			sc.title = "One stalled transfer"
			sc.deadline = cfg.StallDeadline
			sc.fault = fmt.Sprintf("pull: the first GET of the layer stops sending after %s and holds the connection open; "+
				"push: every upload PATCH/PUT body longer than %s stops being read after %s (a resumed upload sends less and passes). "+
				"Caller deadline %s for every contender (standing in for \"forever\"); sturdy's StallTimeout is %s",
				fmtBytes(pullAt), fmtBytes(pushAt), fmtBytes(pushAt), cfg.StallDeadline, cfg.StallTimeout)
			sc.inject = func(reg *registrytest.Registry, dir string) {
				if dir == "pull" {
					reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer, Times: 1, Action: registrytest.Stall(pullAt)})
				} else {
					// Times 0: a PATCH of sturdy's 2-byte config blob must
					// not use the rule up.
					reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch | registrytest.UploadPut, Action: registrytest.Stall(pushAt)})
				}
			}
		case "bandwidth":
			bw := cfg.Bandwidth
			sc.art = mid
			sc.title = "Bandwidth cap " + fmtBytes(bw) + "/s per connection"
			sc.fault = fmt.Sprintf("every connection capped at %s/s in each direction (`SetBandwidth`); the %s blob, so that the capped runs fit the time budget", fmtBytes(bw), fmtBytes(cfg.MemSize))
			sc.inject = func(reg *registrytest.Registry, _ string) { reg.SetBandwidth(bw, bw) }
		case "small":
			sc.art = small
			sc.title = fmt.Sprintf("%d small blobs", cfg.SmallBlobs)
			sc.fault = fmt.Sprintf("no faults; %d layers of %s in one manifest", cfg.SmallBlobs, fmtBytes(cfg.SmallBlobSize))
		case "memory":
			sc.art = mid
			sc.title = "Memory as the blob grows"
			sc.fault = fmt.Sprintf("no faults; a %s blob, compared with the %s blob of the clean-link scenario", fmtBytes(cfg.MemSize), fmtBytes(cfg.Size))
			sc.contenders = only(cOras, cSturdy)
		case "capped-parallel", "capped-parallel-mid":
			sc.art = capped
			if name == "capped-parallel-mid" {
				sc.art = cappedMid
			}
			sc.title = fmt.Sprintf("Parallel pull of a %s blob, %s/s per connection", fmtBytes(sc.art.layers[0].Size), fmtBytes(capBW))
			sc.fault = fmt.Sprintf("every connection's download capped at %s/s (`SetBandwidth`), as by a registry or CDN that limits each connection: "+
				"one stream cannot go faster, %d ranged connections can move up to %d times as much", fmtBytes(capBW), transfer.DefaultPullConnections, transfer.DefaultPullConnections)
			sc.directions = []string{"pull"}
			sc.deadline = cappedDeadline(sc.art.payload)
			sc.contenders = only(cOras, cSturdy, cSturdy1)
			sc.inject = func(reg *registrytest.Registry, _ string) { reg.SetBandwidth(capBW, 0) }
			if name == "capped-parallel-mid" && !cfg.Quick {
				// The smaller blob of the memory comparison: whether a short
				// pull fills its window is chance, and its peak is the max
				// over repetitions.
				sc.reps = 3
			}
		case "capped-resets":
			period := cmp.Or(cfg.CappedResetPeriod, cfg.ResetPeriod)
			sc.art = capped
			sc.title = fmt.Sprintf("Parallel pull of a %s blob, %s/s per connection, resets every %s", fmtBytes(sc.art.layers[0].Size), fmtBytes(capBW), fmtBytes(period))
			sc.fault = fmt.Sprintf("every connection's download capped at %s/s, and a TCP RST at every multiple of %s in blob coordinates (`ResetEvery`) on every blob GET, "+
				"so on every ranged connection: a range that spans a multiple is cut there and resumed from its last byte, a range that ends on one is reset once its last byte has left", fmtBytes(capBW), fmtBytes(period))
			if rs := transfer.DefaultPullRangeSize; period%rs == 0 {
				sc.fault += fmt.Sprintf(". With %s ranges every multiple of %s is the end of a range, so no range is cut in its body: "+
					"only the connections are lost, and one stream over the whole blob would meet %d cuts. `-capped-reset` sets another period", fmtBytes(rs), fmtBytes(period), (sc.art.payload-1)/period)
			}
			sc.directions = []string{"pull"}
			sc.deadline = cappedDeadline(sc.art.payload)
			sc.contenders = only(cOras, cSturdy)
			sc.inject = func(reg *registrytest.Registry, _ string) {
				reg.SetBandwidth(capBW, 0)
				reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(period)})
			}
		case "mirror":
			bw := cfg.MirrorBandwidth
			sc.art = mirrored
			sc.title = fmt.Sprintf("Pull through a mirror, origin capped at %s/s per connection", fmtBytes(bw))
			sc.fault = fmt.Sprintf("the origin registry's downloads capped at %s/s per connection (`SetBandwidth`); in front of it distribution's pull-through cache "+
				"(`registrytest.WithPullThrough`, not capped), warmed before the runs (every blob pulled through it once, then a HEAD of each until it says `Accept-Ranges: bytes`: stored). "+
				"`oras` pulls from the origin; `sturdy` pulls the tag from the origin with `Mirrors: [{Name: %q, Target: <the cache's repository>}]`, so content by digest comes from the cache",
				fmtBytes(bw), mirrorName)
			sc.directions = []string{"pull"}
			sc.deadline = max(cfg.Deadline, 3*time.Duration(float64(sc.art.payload)/float64(bw)*float64(time.Second)))
			sc.contenders = only(cOras, cSturdy)
			sc.mirror = true
			sc.inject = func(reg *registrytest.Registry, _ string) { reg.SetBandwidth(bw, 0) }
		case "killed":
			bw := cfg.KilledBandwidth
			sc.title = "Killed at 50% and run again"
			sc.fault = "no faults; each worker process is killed (SIGKILL) once the registry has sent (pull: blob GET response bodies) or read (push: upload PATCH/PUT bodies) half the payload, " +
				"then the same job runs again into the same OCI layout (pull) or repository (push). `sturdy-state` has a `StateDir` that both runs share; `oras` and `sturdy` start over"
			if bw > 0 {
				sc.fault += fmt.Sprintf(". Every connection capped at %s/s in each direction, so that the small blob is still in flight at the kill", fmtBytes(bw))
				sc.inject = func(reg *registrytest.Registry, _ string) { reg.SetBandwidth(bw, bw) }
			}
			sc.contenders = only(cOras, cSturdy, cSturdyState)
			sc.kill = true
		}
		out = append(out, sc)
	}
	return out, nil
}

// artifact writes an artifact to disk and seeds the registry with it for
// the pulls (with a clean link, outside any measurement).
func (w *world) artifact(ctx context.Context, name string, seed uint64, sizes []int64) (*artifact, error) {
	start := time.Now()
	a, err := makeArtifact(ctx, filepath.Join(w.tmp, "layouts"), name, seed, sizes)
	if err != nil {
		return nil, fmt.Errorf("make %s: %w", name, err)
	}
	repoName := "bench/src-" + name
	repo, err := w.reg.Repository(repoName)
	if err != nil {
		return nil, err
	}
	store, err := openLayout(a.dir)
	if err != nil {
		return nil, err
	}
	opts := oras.DefaultCopyOptions
	opts.Concurrency = 8
	if _, err := oras.Copy(ctx, store, benchTag, repo, benchTag, opts); err != nil {
		return nil, fmt.Errorf("seed %s: %w", name, err)
	}
	w.arts[name] = a
	w.srcRepo[name] = repoName
	w.cfg.Log("artifact %-6s %d layer(s), %s, ready in %s", name, len(a.layers), fmtBytes(a.payload), time.Since(start).Round(time.Millisecond))
	return a, nil
}

// run is one contender moving one artifact once.
type run struct {
	scenario  string
	direction string
	contender string
	rep       int
	res       result
	stats     registrytest.Stats
	payload   int64
	procErr   string
	// mirrorStats is the pull-through cache's counters (mirror scenario).
	mirrorStats *registrytest.Stats
	kill        *killInfo // killed scenario
}

func (r *run) ok() bool { return r.procErr == "" && r.res.OK }

// wire is the bytes that crossed the wire in the direction of the
// payload: what the registry sent (pull) or received (push).
func (r *run) wire() int64 {
	if r.direction == "pull" {
		return r.stats.WireDown
	}
	return r.stats.WireUp
}

// body is the request or response body bytes of blob and manifest
// requests in the direction of the payload: the wire without headers.
func (r *run) body() int64 {
	var n int64
	for k, ks := range r.stats.Kinds {
		if r.direction == "pull" {
			n += ks.ResponseBodyBytes * b2i(k == registrytest.BlobGet || k == registrytest.ManifestGet)
		} else {
			n += ks.RequestBodyBytes * b2i(k&(registrytest.UploadPost|registrytest.UploadPatch|registrytest.UploadPut|registrytest.ManifestPut) != 0)
		}
	}
	return n
}

func (r *run) requests() int64 {
	var n int64
	for _, ks := range r.stats.Kinds {
		n += ks.Requests
	}
	return n
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func (r *run) logLine() string {
	status := "ok"
	if !r.ok() {
		status = "FAILED (" + shortErr(r.errText()) + ")"
	}
	return fmt.Sprintf("%s in %.2fs, wire %.3fx payload, %d requests over %d connections, peak RSS %s", status, r.res.Seconds,
		float64(r.wire())/float64(r.payload), r.requests(), r.res.Dials, fmtBytes(r.res.PeakRSS))
}

func (r *run) errText() string {
	if r.procErr != "" {
		return r.procErr
	}
	return r.res.Err
}

// runOne runs one contender in a worker process under the scenario's
// faults, re-armed for it alone.
func (w *world) runOne(ctx context.Context, sc *scenario, dir, contender string, rep int) *run {
	r := &run{scenario: sc.name, direction: dir, contender: contender, rep: rep, payload: sc.art.payload}
	j := job{
		Contender:   contender,
		Direction:   dir,
		Host:        w.reg.Host(),
		Tag:         benchTag,
		Deadline:    sc.deadline,
		Backoff:     w.cfg.Backoff,
		MaxBackoff:  w.cfg.MaxBackoff,
		Stall:       w.cfg.StallTimeout,
		Concurrency: w.cfg.Concurrency,
	}
	var cleanup func()
	if dir == "pull" {
		j.Repo = w.srcRepo[sc.art.name]
		dst, err := os.MkdirTemp(w.tmp, "pull-*")
		if err != nil {
			r.procErr = err.Error()
			return r
		}
		j.Layout = dst
		cleanup = func() { os.RemoveAll(dst) }
	} else {
		// A repository of its own: the blob is not there to be skipped.
		j.Repo = fmt.Sprintf("bench/%s-%s-%s-%d", sc.name, dir, contender, rep+1)
		j.Layout = sc.art.dir
		cleanup = func() {}
	}
	defer cleanup()
	if w.cfg.CPUProfiles != "" && rep >= 0 {
		if err := os.MkdirAll(w.cfg.CPUProfiles, 0o755); err == nil {
			j.CPUProfile, _ = filepath.Abs(filepath.Join(w.cfg.CPUProfiles, fmt.Sprintf("%s-%s-%s-%d.pprof", sc.name, dir, contender, rep+1)))
		}
	}
	if sc.mirror {
		j.Mirror = w.cache.Host() + "/" + w.srcRepo[sc.art.name]
	}
	if contender == cSturdyState {
		dir, err := os.MkdirTemp(w.tmp, "state-*")
		if err != nil {
			r.procErr = err.Error()
			return r
		}
		defer os.RemoveAll(dir)
		j.StateDir = dir
	}

	w.reg.ClearFaults()
	w.reg.SetBandwidth(0, 0)
	if sc.inject != nil {
		sc.inject(w.reg, dir)
	}
	defer func() {
		w.reg.ClearFaults() // releases stalled handlers
		w.reg.SetBandwidth(0, 0)
	}()
	quiesce()
	if !sc.kill {
		w.resetStats()
		r.res, r.procErr, _, _ = w.spawn(ctx, sc, j, 0)
		r.stats = w.settle(ctx, sc, dir, contender)
		if w.cache != nil && sc.mirror {
			s := w.cache.Stats()
			r.mirrorStats = &s
		}
		return r
	}

	// Killed once half the payload has crossed, then run again.
	k := &killInfo{}
	r.kill = k
	w.resetStats()
	var first result
	first, r.procErr, k.killed, k.firstSeconds = w.spawn(ctx, sc, j, r.payload/2)
	first1 := w.settle(ctx, sc, dir, contender)
	k.at = payloadBody(first1, dir)
	k.firstWire = wireOf(first1, dir)
	if !k.killed {
		// It finished first: what it reported is the whole story.
		r.res, r.stats = first, first1
		if r.procErr == "" && !first.OK {
			r.procErr = "first run: " + first.Err
		}
		return r
	}
	r.procErr = ""
	w.resetStats()
	r.res, r.procErr, _, _ = w.spawn(ctx, sc, j, 0)
	second := w.settle(ctx, sc, dir, contender)
	k.secondSeconds = r.res.Seconds
	r.res.Seconds += k.firstSeconds
	r.stats = addStats(first1, second)
	return r
}

// killInfo is what a killed scenario's run adds: the first, killed run.
type killInfo struct {
	killed bool // false if the first run ended before the kill
	// at is the payload bytes the registry had sent (pull) or read (push)
	// when the worker was killed; firstWire its wire bytes then.
	at, firstWire int64
	// firstSeconds is the killed run's wall time from the process's start
	// (start-up included); secondSeconds the re-run's copy time.
	firstSeconds, secondSeconds float64
}

// quiesce starts each run on a machine the runs before it have left
// alone: the registry's heap (it lives in this process) collected, and
// the GiBs they wrote flushed to disk rather than written back during
// this run.
func quiesce() {
	runtime.GC()
	syscall.Sync()
}

func (w *world) resetStats() {
	w.reg.ResetStats()
	if w.cache != nil {
		w.cache.ResetStats()
	}
}

// settle waits for every cut handler and returns the registry's counters.
func (w *world) settle(ctx context.Context, sc *scenario, dir, contender string) registrytest.Stats {
	// The counters are read once every cut handler has returned, with
	// every byte the registry keeps from the cut requests.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := w.reg.SettleCuts(sctx); err != nil {
		w.cfg.Log("%s %s %s: cut handlers not done: %v", sc.name, dir, contender, err)
	}
	return w.reg.Stats()
}

// payloadBody is the body bytes of the payload's blobs the registry sent
// (pull: blob GET responses) or read (push: upload PATCH and PUT bodies).
func payloadBody(s registrytest.Stats, dir string) int64 {
	if dir == "pull" {
		return s.Kinds[registrytest.BlobGet].ResponseBodyBytes
	}
	return s.Kinds[registrytest.UploadPatch].RequestBodyBytes + s.Kinds[registrytest.UploadPut].RequestBodyBytes
}

func wireOf(s registrytest.Stats, dir string) int64 {
	if dir == "pull" {
		return s.WireDown
	}
	return s.WireUp
}

// addStats sums two periods' counters.
func addStats(a, b registrytest.Stats) registrytest.Stats {
	out := registrytest.Stats{WireDown: a.WireDown + b.WireDown, WireUp: a.WireUp + b.WireUp, Kinds: map[registrytest.Kind]registrytest.KindStats{}}
	for _, s := range []registrytest.Stats{a, b} {
		for k, ks := range s.Kinds {
			o := out.Kinds[k]
			o.Requests += ks.Requests
			o.RequestBodyBytes += ks.RequestBodyBytes
			o.LateBodyBytes += ks.LateBodyBytes
			o.ResponseBodyBytes += ks.ResponseBodyBytes
			o.Cuts += ks.Cuts
			for st, n := range ks.Statuses {
				if o.Statuses == nil {
					o.Statuses = map[int]int64{}
				}
				o.Statuses[st] += n
			}
			out.Kinds[k] = o
		}
	}
	return out
}

// spawn runs the job in a worker process and returns its result. With
// killAt > 0 the worker is sent SIGKILL once the registry's payload body
// bytes (payloadBody, polled every 2 ms) reach killAt; killed says whether
// that happened, secs is the process's wall time then.
func (w *world) spawn(ctx context.Context, sc *scenario, j job, killAt int64) (res result, procErr string, killed bool, secs float64) {
	spec, err := json.Marshal(j)
	if err != nil {
		return res, err.Error(), false, 0
	}
	// The worker ends by its own deadline; this one only guards against a
	// worker that does not.
	pctx, cancel := context.WithTimeout(ctx, sc.deadline+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, w.self)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(spec), "GORACE="+goraceNoExitSleep())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, "worker: " + err.Error(), false, 0
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var runErr error
	if killAt > 0 {
		t := time.NewTicker(2 * time.Millisecond)
	poll:
		for {
			select {
			case runErr = <-done:
				break poll
			case <-t.C:
				if payloadBody(w.reg.Stats(), j.Direction) >= killAt {
					_ = cmd.Process.Kill()
					secs = time.Since(start).Seconds()
					killed = true
					<-done
					break poll
				}
			}
		}
		t.Stop()
		if killed {
			return res, "", true, secs
		}
	} else {
		runErr = <-done
	}
	secs = time.Since(start).Seconds()
	if line := lastLine(stdout.Bytes()); len(line) > 0 {
		if err := json.Unmarshal(line, &res); err != nil {
			procErr = "bad worker output: " + err.Error()
		}
	} else {
		procErr = fmt.Sprintf("worker: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	return res, procErr, false, secs
}

// warmCache pulls the artifact through the pull-through cache once, with
// plain oras-go, and waits until the cache has stored every blob: a
// stored blob's HEAD says Accept-Ranges (see examples/e2e/mirror_test.go).
func (w *world) warmCache(ctx context.Context, a *artifact) error {
	start := time.Now()
	cache, err := registrytest.Start(registrytest.WithPullThrough(w.reg))
	if err != nil {
		return fmt.Errorf("start the pull-through cache: %w", err)
	}
	w.cache = cache
	repoName := w.srcRepo[a.name]
	repo, err := cache.Repository(repoName)
	if err != nil {
		return err
	}
	dst, err := os.MkdirTemp(w.tmp, "warm-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dst)
	store, err := openLayout(dst)
	if err != nil {
		return err
	}
	if _, err := oras.Copy(ctx, repo, benchTag, store, benchTag, oras.DefaultCopyOptions); err != nil {
		return fmt.Errorf("warm the cache: %w", err)
	}
	client := cache.Client()
	for _, d := range a.layers {
		url := cache.URL() + "/v2/" + repoName + "/blobs/" + d.Digest.String()
		for stored := false; !stored; {
			if time.Since(start) > 2*time.Minute {
				return fmt.Errorf("the cache did not store %s", d.Digest)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				stored = resp.Header.Get("Accept-Ranges") == "bytes"
			} else if ctx.Err() != nil {
				return ctx.Err()
			}
			if !stored {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	w.cfg.Log("pull-through cache warmed with %s in %s", a.name, time.Since(start).Round(time.Millisecond))
	return nil
}

// goraceNoExitSleep keeps the caller's GORACE options and drops the race
// detector's default 1 s sleep at exit, which would add a second to every
// worker of a -race test run (and nothing to a normal build).
func goraceNoExitSleep() string {
	g := os.Getenv("GORACE")
	if !strings.Contains(g, "atexit_sleep_ms") {
		g = strings.TrimSpace(g + " atexit_sleep_ms=0")
	}
	return g
}

func lastLine(b []byte) []byte {
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			last = append(last[:0], l...)
		}
	}
	return last
}

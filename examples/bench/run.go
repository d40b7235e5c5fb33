package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"oras.land/oras-go/v2"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

var allScenarios = []string{"clean", "resets", "503", "stall", "bandwidth", "small", "memory", "capped-parallel", "capped-parallel-mid", "capped-resets"}

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
	var single, mid, small, capped, cappedMid *artifact
	var err error
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
			sc.contenders = cfg.Contenders
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
	spec, err := json.Marshal(j)
	if err != nil {
		r.procErr = err.Error()
		return r
	}

	w.reg.ClearFaults()
	w.reg.SetBandwidth(0, 0)
	if sc.inject != nil {
		sc.inject(w.reg, dir)
	}
	w.reg.ResetStats()

	// The worker ends by its own deadline; this one only guards against a
	// worker that does not.
	pctx, cancel := context.WithTimeout(ctx, sc.deadline+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, w.self)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(spec), "GORACE="+goraceNoExitSleep())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	// The counters are read once every cut handler has returned, with
	// every byte the registry keeps from the cut requests.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	if err := w.reg.SettleCuts(sctx); err != nil {
		w.cfg.Log("%s %s %s: cut handlers not done: %v", sc.name, dir, contender, err)
	}
	scancel()
	r.stats = w.reg.Stats()
	w.reg.ClearFaults() // releases stalled handlers
	w.reg.SetBandwidth(0, 0)

	if line := lastLine(stdout.Bytes()); len(line) > 0 {
		if err := json.Unmarshal(line, &r.res); err != nil {
			r.procErr = "bad worker output: " + err.Error()
		}
	} else {
		r.procErr = fmt.Sprintf("worker: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	return r
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

package main

import (
	"bufio"
	"fmt"
	"maps"
	"math"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"oras.land/oras-go/v2/content/oci"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// notesMarker separates the generated report from notes written by hand
// below it; writeReport keeps everything from the marker on.
const notesMarker = "<!-- bench:notes (everything below this line is kept when the report is regenerated) -->"

type report struct {
	cfg       config
	started   time.Time
	elapsed   time.Duration
	runs      []*run
	scenarios []*scenario
	markdown  string
	verdicts  []verdict
}

type verdict struct {
	target string
	met    bool
	detail string
	// notJudged, if set, says why the target was not judged in this run
	// (met is then meaningless).
	notJudged string
}

// cell is the aggregate of one contender's runs of one scenario and
// direction.
type cell struct {
	runs     []*run
	okCount  int
	ratio    float64 // median of time / sturdy's time in the same repetition; NaN if none
	ratios   []float64
	seconds  float64 // median
	wire     float64 // median wire / payload
	body     float64 // median body / payload
	requests int64   // median
	maxRSS   int64   // max over runs
	peakHeap uint64  // max over runs
	alloc    uint64  // heap bytes allocated, max over runs
	gcs      uint64  // GC cycles, max over runs
	// Blob GETs (medians): requests, requests cut, and the response body
	// bytes the registry sent per byte of payload.
	blobGets, blobCuts int64
	blobBody           float64
	dials              int64 // median: connections the client opened
	// Uploads under cuts (medians): see run.cuts.
	patches, patchCuts, putCuts int64
	wrote, kept, late           int64 // client wrote; registry kept; of it, after the client's reset
}

func (r *report) cell(scen, dir, contender string) *cell {
	c := &cell{ratio: math.NaN()}
	sturdy := map[int]*run{}
	for _, x := range r.runs {
		if x.scenario == scen && x.direction == dir {
			if x.contender == cSturdy {
				sturdy[x.rep] = x
			}
			if x.contender == contender {
				c.runs = append(c.runs, x)
			}
		}
	}
	if len(c.runs) == 0 {
		return nil
	}
	var secs, wire, body, reqs []float64
	var blobGets, blobCuts, blobBody, dials []float64
	var patches, patchCuts, putCuts, wrote, kept, late []float64
	for _, x := range c.runs {
		u := x.uploads()
		patches, patchCuts, putCuts = append(patches, float64(u.patches)), append(patchCuts, float64(u.patchCuts)), append(putCuts, float64(u.putCuts))
		wrote, kept, late = append(wrote, float64(x.res.ClientWrote)), append(kept, float64(u.kept)), append(late, float64(u.late))
		if x.ok() {
			c.okCount++
		}
		if s := sturdy[x.rep]; s != nil && s.ok() && s.res.Seconds > 0 {
			c.ratios = append(c.ratios, x.res.Seconds/s.res.Seconds)
		}
		secs = append(secs, x.res.Seconds)
		wire = append(wire, float64(x.wire())/float64(x.payload))
		body = append(body, float64(x.body())/float64(x.payload))
		reqs = append(reqs, float64(x.requests()))
		bg := x.blobGet()
		blobGets, blobCuts = append(blobGets, float64(bg.Requests)), append(blobCuts, float64(bg.Cuts))
		blobBody = append(blobBody, float64(bg.ResponseBodyBytes)/float64(x.payload))
		dials = append(dials, float64(x.res.Dials))
		c.maxRSS = max(c.maxRSS, x.res.PeakRSS)
		c.peakHeap = max(c.peakHeap, x.res.PeakHeap)
		c.alloc, c.gcs = max(c.alloc, x.res.Allocated), max(c.gcs, x.res.GCs)
	}
	if len(c.ratios) > 0 {
		c.ratio = median(c.ratios)
	}
	c.seconds, c.wire, c.body, c.requests = median(secs), median(wire), median(body), int64(median(reqs))
	c.patches, c.patchCuts, c.putCuts = int64(median(patches)), int64(median(patchCuts)), int64(median(putCuts))
	c.wrote, c.kept, c.late = int64(median(wrote)), int64(median(kept)), int64(median(late))
	c.blobGets, c.blobCuts, c.blobBody = int64(median(blobGets)), int64(median(blobCuts)), median(blobBody)
	c.dials = int64(median(dials))
	return c
}

// blobGet is the registry's counters of the run's blob GETs.
func (r *run) blobGet() registrytest.KindStats { return r.stats.Kinds[registrytest.BlobGet] }

// speedup is contender c's throughput over base's in one scenario and
// direction: base's time / c's time in each repetition where both
// succeeded, and their median (NaN if none).
func (r *report) speedup(scen, dir, c, base string) (float64, []float64) {
	times := map[string]map[int]float64{c: {}, base: {}}
	for _, x := range r.runs {
		if x.scenario == scen && x.direction == dir && x.ok() && x.res.Seconds > 0 {
			if m, ok := times[x.contender]; ok {
				m[x.rep] = x.res.Seconds
			}
		}
	}
	var per []float64
	for _, rep := range slices.Sorted(maps.Keys(times[c])) {
		if b, ok := times[base][rep]; ok {
			per = append(per, b/times[c][rep])
		}
	}
	return median(per), per
}

// uploadStats is what a push's uploads cost the registry: requests and
// cuts by kind, and the upload body bytes it kept.
type uploadStats struct {
	patches, patchCuts, putCuts int64
	// kept is the upload body bytes (PATCH + PUT) the registry read, all
	// of which it keeps; late is the part read after a realistic cut had
	// reset the client.
	kept, late int64
}

func (r *run) uploads() uploadStats {
	patch, put := r.stats.Kinds[registrytest.UploadPatch], r.stats.Kinds[registrytest.UploadPut]
	return uploadStats{
		patches: patch.Requests, patchCuts: patch.Cuts, putCuts: put.Cuts,
		kept: patch.RequestBodyBytes + put.RequestBodyBytes,
		late: patch.LateBodyBytes + put.LateBodyBytes,
	}
}

// perCut is PATCH requests per PATCH cut, as text.
func perCut(patches, cuts int64) string {
	if cuts == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", float64(patches)/float64(cuts))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *report) render() {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cfg := r.cfg

	p("# sturdy benchmark\n\n")
	p("sturdy side by side with oras-go v2.7.0 on one in-process CNCF distribution registry ")
	p("(`examples/registrytest`, filesystem driver, plain HTTP on 127.0.0.1), the same faults on the wire for every contender.\n\n")
	p("| | |\n|---|---|\n")
	p("| command | `%s` |\n", commandLine(cfg.Args))
	p("| date | %s |\n", r.started.Format("2006-01-02 15:04 MST"))
	p("| go | %s %s/%s |\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	p("| cpu | %s, %d cores |\n", cpuModel(), runtime.NumCPU())
	if k := readTrim("/proc/sys/kernel/osrelease"); k != "" {
		p("| kernel | %s |\n", k)
	}
	if m := memTotal(); m != "" {
		p("| memory | %s |\n", m)
	}
	p("| run time | %s |\n\n", r.elapsed.Round(time.Second))

	p("## Targets\n\n")
	p("Judged by the program from the measurements below.\n\n")
	r.verdicts = r.judge()
	if len(r.verdicts) == 0 {
		p("No target could be judged from the scenarios run.\n\n")
	}
	for _, v := range r.verdicts {
		mark := "**met**"
		if !v.met {
			mark = "**MISSED**"
		}
		if v.notJudged != "" {
			mark = "not judged (" + v.notJudged + ")"
		}
		p("- %s: %s. %s\n", v.target, mark, v.detail)
	}
	p("\n")

	p("## Contenders\n\n")
	for _, c := range cfg.Contenders {
		p("- `%s`: %s.\n", c, contenderLabels[c])
	}
	p("\nDetails: `oras`, `sturdy` and `sturdy-1conn` use the same client (an `auth.Client` over an `http.Client` with http.DefaultTransport, ")
	p("which is what `transfer.NewClient(nil, nil)` returns); `oras-dc` uses `auth.DefaultClient`'s equivalent, whose `retry.DefaultClient` ")
	p("retries GET/HEAD/POST and rewindable bodies up to 5 times (built as `retry.NewTransport` over the same transport, with its User-Agent and `auth.DefaultCache`). ")
	p("The transport under every client is a clone of `http.DefaultTransport` whose dialer counts the bytes written (see **client wrote** below) and which keeps 64 idle connections per host, as the clone sturdy substitutes for `http.DefaultTransport` does (with the default 2, most ranges of a parallel pull would open a new connection); nothing else differs. `retry6` is a per-blob loop built from oras-go's own ")
	p("`Exists`, `Fetch` and `Push` (not a loop over `oras.Copy`): each attempt checks whether the blob exists, ")
	p("then fetches it from byte 0 and pushes it whole, under a deadline of size / 10 MiB/s x 2 clamped to [5 min, 8 h] ")
	p("(modctl's formula); any error except the caller's deadline is retried, Retry-After is not read, a failing blob ")
	p("does not cancel the others, and the manifest goes last. Its backoff is sturdy's: %s initial, doubling with ±50%% jitter, capped at %s ", cfg.Backoff, cfg.MaxBackoff)
	p("(the production default is 5 s / 2 min; shorter here so waits do not dominate every faulty scenario). ")
	p("Every contender moves up to %d blobs at once (oras-go's default is 3, sturdy's 4). Every run has a caller deadline of %s ", cfg.Concurrency, cfg.Deadline)
	p("(%s in the stall scenario; in the capped scenarios at least three times what one connection at the cap needs). ", cfg.StallDeadline)
	p("`sturdy` leaves `PullConnections`, `MaxPullConnections` and `PullRangeSize` at zero, as a caller who sets nothing does: a blob of %s or more has its first %s ranges read over one connection, timed (200 ms of reading or 3 ranges, in requests of 1 and 2), ", fmtBytes(2*transfer.DefaultPullRangeSize), fmtBytes(transfer.DefaultPullRangeSize))
	p("and if the reader waited on them at least half the time the rest is fetched as %s ranges over up to %d connections (%d per Copy), reassembled in order and verified as a whole; otherwise the rest comes over that one connection. `sturdy-1conn` differs only in `PullConnections: 1`, ", fmtBytes(transfer.DefaultPullRangeSize), transfer.DefaultPullConnections, transfer.DefaultMaxPullConnections)
	p("one stream per blob as before ranged pulls, and runs only pulls (the clean link and the capped scenarios). ")
	p("The options sturdy's contenders do set (backoff, `StallTimeout`, an Observer) change nothing on a clean pull.\n\n")

	p("## How it is measured\n\n")
	p("- Blobs are random bytes from a seeded ChaCha8 stream, written to OCI layouts on disk; pull = registry -> a fresh OCI layout (`oci.Store`), ")
	p("push = OCI layout -> a repository of its own (so nothing is skipped or mounted). Pulls read from a repository seeded once, outside the measurement.\n")
	p("- Each run is a separate process (the bench binary re-executed); **peak RSS** is that process's `VmHWM` (/proc/self/status) at the end, ")
	p("so it is the contender's own, Go runtime and touched binary pages included (about 20 MiB of any row is that baseline). ")
	p("Not getrusage: Go starts children with vfork semantics and Linux folds the parent's RSS (here the registry) into the child's `ru_maxrss` at exec. ")
	p("Peak heap is the highest `/memory/classes/heap/objects:bytes` sampled every 10 ms.\n")
	p("- **time vs sturdy** is the run's wall time (the copy call alone, not process start) divided by sturdy's in the same scenario and repetition; ")
	p("below 1 means faster than sturdy. Absolute seconds are in the next column.\n")
	p("- **wire/payload**: bytes on the registry's sockets in the payload's direction (sent for a pull, received for a push; status lines and headers included) ")
	p("divided by the artifact's size (layers + config + manifest). **body/payload** counts only blob and manifest body bytes, without headers. ")
	p("A failed run's counters show what it moved before it gave up.\n")
	p("- **Cuts** of an upload body are as on a real network (`registrytest.WithRealisticCuts(0, 0)`): at the cut point the registry takes the body bytes ")
	p("that have already reached it (up to %s, what the client wrote and the registry had not read yet) and resets the client at once; ", fmtBytes(registrytest.DefaultInFlight))
	p("its handler goes on, is handed those bytes %s later, and then sees its body fail. So for %s after the client saw the reset an upload status query ", registrytest.DefaultCutLag, registrytest.DefaultCutLag)
	p("reports a stale offset, and the registry finally keeps more than the client can know it received. Counters are read once every cut handler has returned (`SettleCuts`). ")
	p("Response bodies (pulls) are cut as before: the RST follows the bytes the client read.\n")
	p("- **client wrote**: every byte the worker's client wrote into its connections during the copy, counted by a dialer wrapped around the transport ")
	p("(what `write` and `sendfile` handed the kernel; headers and every request included). It includes the bytes lost at each RST: ")
	p("those still in the client's send buffer and those in the registry's receive buffer beyond what it took in flight, which never reach the registry. ")
	p("**registry kept**: upload body bytes (PATCH + PUT) the registry read, all of which it keeps, in-flight bytes read after the client's reset included (**kept after the reset**). ")
	p("**PATCH per cut**: upload PATCH requests / PATCH requests a cut reset; a push that resumes without re-sending needs one PATCH per cut plus the final one. ")
	p("oras-go pushes a blob in one PUT (POST, then PUT with the body), so its cuts land on PUTs and it sends no PATCH.\n")
	p("- The ranged-pull tables: **throughput** is payload / time (medians); **vs oras** and **vs 1conn** are the row's throughput over plain oras-go's ")
	p("and over `sturdy-1conn`'s (their time / the row's in the same repetition, median). **blob GETs** and **cut** count blob GET requests and those a reset cut, **connections** the TCP connections the client opened (median); ")
	p("**blob GET body/payload** is what the registry sent as blob GET response bodies (`Stats().Kinds[BlobGet].ResponseBodyBytes`) per byte of payload: ")
	p("a byte fetched twice shows above 1.000. **allocated** is every heap byte the worker allocated during the copy (`/gc/heap/allocs:bytes`).\n")
	p("- Before every run the faults are cleared and injected again and the counters reset; contenders run in turn, ")
	p("and the clean-link scenario is repeated %d times, each repetition starting with a different contender (medians reported).\n\n", cfg.Reps)

	for _, sc := range r.scenarios {
		p("## %s\n\n", sc.title)
		p("%s. Artifact: %d layer(s), %s.", upperFirst(sc.fault), len(sc.art.layers), fmtBytes(sc.art.payload))
		if sc.name == "bandwidth" || strings.HasPrefix(sc.name, "capped-") {
			var rates []string
			for _, dir := range sc.directions {
				if c := r.cell(sc.name, dir, cOras); c != nil && c.okCount > 0 && c.seconds > 0 {
					rates = append(rates, fmt.Sprintf("%s %s/s", dir, fmtBytes(int64(float64(sc.art.payload)/c.seconds))))
				}
			}
			if len(rates) > 0 {
				p(" Delivered to plain oras-go: %s (payload / time).", strings.Join(rates, ", "))
			}
		}
		if sc.reps > 1 {
			p(" %d repetitions, medians.", sc.reps)
		}
		p("\n\n")
		p("| dir | contender | ok | time vs sturdy | time | wire/payload | body/payload | requests | peak RSS | notes |\n")
		p("|---|---|---|--:|--:|--:|--:|--:|--:|---|\n")
		for _, dir := range sc.directions {
			for _, c := range sc.contenders {
				cl := r.cell(sc.name, dir, c)
				if cl == nil {
					continue
				}
				ratio := ratioText(cl.ratio)
				if cl.okCount == 0 && ratio != "n/a" {
					ratio = "(failed at " + ratio + ")"
				}
				p("| %s | %s | %s | %s | %.2f s | %.3f | %.3f | %d | %s | %s |\n", dir, c, cl.okText(), ratio,
					cl.seconds, cl.wire, cl.body, cl.requests, fmtBytes(cl.maxRSS), cl.notes())
			}
		}
		p("\n")
		if sc.name == "resets" && slices.Contains(sc.directions, "push") {
			r.renderPushCuts(p, sc)
		}
		if sc.name == "clean" || strings.HasPrefix(sc.name, "capped-") {
			r.renderRanged(p, sc)
		}
		if sc.mirror {
			r.renderMirror(p, sc)
		}
		if sc.kill {
			r.renderKilled(p, sc)
		}
	}

	if slices.ContainsFunc(r.scenarios, func(s *scenario) bool { return s.name == "memory" }) &&
		slices.ContainsFunc(r.scenarios, func(s *scenario) bool { return s.name == "clean" }) {
		p("## Peak memory by blob size\n\n")
		p("Peak RSS (and peak Go heap) of one process moving one blob, clean link; the %s row is the clean-link scenario's (max over its repetitions). ", fmtBytes(cfg.Size))
		p("On a clean loopback one connection usually keeps up and sturdy keeps it (see the requests column); where it splits a blob of two ranges or more (%s) over ranged connections, ", fmtBytes(2*transfer.DefaultPullRangeSize))
		p("it holds up to %s of ranges per blob: see **Peak memory of the ranged pull** for it under a per-connection cap.\n\n", fmtBytes(rangedWindow))
		p("| dir | contender | RSS @ %s | RSS @ %s | growth | heap @ %s | heap @ %s |\n", fmtBytes(cfg.MemSize), fmtBytes(cfg.Size), fmtBytes(cfg.MemSize), fmtBytes(cfg.Size))
		p("|---|---|--:|--:|--:|--:|--:|\n")
		for _, dir := range []string{"pull", "push"} {
			for _, c := range cfg.Contenders {
				small, big := r.cell("memory", dir, c), r.cell("clean", dir, c)
				if small == nil || big == nil {
					continue
				}
				p("| %s | %s | %s | %s | %+.1f%% | %s | %s |\n", dir, c, fmtBytes(small.maxRSS), fmtBytes(big.maxRSS),
					100*(float64(big.maxRSS)/float64(small.maxRSS)-1), fmtBytes(int64(small.peakHeap)), fmtBytes(int64(big.peakHeap)))
			}
		}
		p("\n")
	}
	r.renderRangedMemory(p)

	var failed []*run
	for _, x := range r.runs {
		if !x.ok() {
			failed = append(failed, x)
		}
	}
	if len(failed) > 0 {
		p("## Errors of the failed runs\n\n")
		for _, x := range failed {
			p("- %s %s `%s` (rep %d, %.1f s): `%s`\n", x.scenario, x.direction, x.contender, x.rep+1, x.res.Seconds, oneLine(x.errText(), 400))
		}
		p("\n")
	}
	r.markdown = b.String()
}

// rangedWindow is the most a blob's ranged pull holds in memory with the
// default pull settings: 2 x connections x range size.
const rangedWindow = 2 * transfer.DefaultPullConnections * transfer.DefaultPullRangeSize

// rangedContenders are the rows of the ranged-pull tables.
var rangedContenders = []string{cOras, cSturdy1, cSturdy}

// renderRanged is the pull of a scenario in terms of the ranged pull:
// throughput against plain oras-go and one stream, what the blob GETs
// cost, and memory.
func (r *report) renderRanged(p func(string, ...any), sc *scenario) {
	if r.cell(sc.name, "pull", cSturdy1) == nil && !strings.HasPrefix(sc.name, "capped-") {
		return
	}
	p("Ranged pull: throughput, blob GETs and memory (see **How it is measured**).\n\n")
	p("| dir | contender | ok | time | throughput | vs oras | vs 1conn | blob GETs | cut | connections | blob GET body/payload | peak heap | peak RSS |\n")
	p("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range rangedContenders {
		cl := r.cell(sc.name, "pull", c)
		if cl == nil {
			continue
		}
		vsOras, _ := r.speedup(sc.name, "pull", c, cOras)
		vs1, _ := r.speedup(sc.name, "pull", c, cSturdy1)
		tp := "n/a"
		if cl.okCount > 0 && cl.seconds > 0 {
			tp = fmtBytes(int64(float64(sc.art.payload)/cl.seconds)) + "/s"
		}
		p("| pull | %s | %s | %.2f s | %s | %s | %s | %d | %d | %d | %.3f | %s | %s |\n", c, cl.okText(), cl.seconds, tp, ratioText(vsOras), ratioText(vs1),
			cl.blobGets, cl.blobCuts, cl.dials, cl.blobBody, fmtBytes(int64(cl.peakHeap)), fmtBytes(cl.maxRSS))
	}
	p("\n")
}

// renderRangedMemory compares the peak memory of the capped pulls of the
// mid-sized and the big blob.
func (r *report) renderRangedMemory(p func(string, ...any)) {
	mid, big := r.scenario("capped-parallel-mid"), r.scenario("capped-parallel")
	if mid == nil || big == nil {
		return
	}
	midSize, bigSize := mid.art.layers[0].Size, big.art.layers[0].Size
	p("## Peak memory of the ranged pull\n\n")
	p("Peak Go heap and peak RSS of one process pulling the %s and the %s blob under the per-connection cap (max over runs). ", fmtBytes(midSize), fmtBytes(bigSize))
	p("A ranged pull holds at most 2 x PullConnections ranges per blob, fetched or fetching ahead of what the destination has read: ")
	p("%s with the defaults (2 x %d x %s; one Copy at most %s over its %d connections). ", fmtBytes(rangedWindow), transfer.DefaultPullConnections,
		fmtBytes(transfer.DefaultPullRangeSize), fmtBytes(2*transfer.DefaultMaxPullConnections*transfer.DefaultPullRangeSize), transfer.DefaultMaxPullConnections)
	p("So sturdy's memory is flat in the blob's size, but not small: a one-stream pull (`sturdy-1conn`, oras-go) holds a few copy buffers. ")
	p("Range buffers are reused, so what sturdy allocates is about a window's worth whatever the size of the blob, and with few GCs its peak heap is close to what it allocated: ")
	p("a shorter pull may not reach the full window, a longer one may allocate a range or two beyond it before reuse catches up.")
	if midSize < rangedWindow {
		p(" At these sizes the %s blob is fewer ranges than the window holds, so memory grows with the blob up to the window; the target is judged only when both blobs fill it.", fmtBytes(midSize))
	}
	p("\n\n")
	p("| dir | contender | heap @ %s | heap @ %s | growth | RSS @ %s | RSS @ %s | growth | allocated @ %s | allocated @ %s | GCs |\n",
		fmtBytes(midSize), fmtBytes(bigSize), fmtBytes(midSize), fmtBytes(bigSize), fmtBytes(midSize), fmtBytes(bigSize))
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range rangedContenders {
		small, large := r.cell(mid.name, "pull", c), r.cell(big.name, "pull", c)
		if small == nil || large == nil {
			continue
		}
		p("| pull | %s | %s | %s | %+.1f%% | %s | %s | %+.1f%% | %s | %s | %d / %d |\n", c, fmtBytes(int64(small.peakHeap)), fmtBytes(int64(large.peakHeap)),
			100*growth(float64(small.peakHeap), float64(large.peakHeap)), fmtBytes(small.maxRSS), fmtBytes(large.maxRSS), 100*growth(float64(small.maxRSS), float64(large.maxRSS)),
			fmtBytes(int64(small.alloc)), fmtBytes(int64(large.alloc)), small.gcs, large.gcs)
	}
	p("\n")
}

func growth(from, to float64) float64 { return to/from - 1 }

func (r *report) scenario(name string) *scenario {
	for _, sc := range r.scenarios {
		if sc.name == name {
			return sc
		}
	}
	return nil
}

// renderPushCuts is the push rows of the resets scenario in terms of the
// cuts: the upload requests they cost, what the client wrote and what the
// registry kept.
func (r *report) renderPushCuts(p func(string, ...any), sc *scenario) {
	p("Push under cuts: the upload requests each cut cost, the bytes the client wrote into its connections and the upload body bytes the registry kept, ")
	p("each also per byte of payload (%s).\n\n", fmtBytes(sc.art.payload))
	p("| dir | contender | ok | cuts (PATCH / PUT) | PATCH requests | PATCH per cut | client wrote | wrote/payload | registry kept | kept/payload | kept after the reset | time |\n")
	p("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range sc.contenders {
		cl := r.cell(sc.name, "push", c)
		if cl == nil {
			continue
		}
		pay := float64(sc.art.payload)
		p("| push | %s | %s | %d / %d | %d | %s | %s | %.3f | %s | %.3f | %s | %.2f s |\n", c, cl.okText(),
			cl.patchCuts, cl.putCuts, cl.patches, perCut(cl.patches, cl.patchCuts),
			fmtBytes(cl.wrote), float64(cl.wrote)/pay, fmtBytes(cl.kept), float64(cl.kept)/pay, fmtBytes(cl.late), cl.seconds)
	}
	p("\n")
}

// judge checks the product's targets against the measurements.
func (r *report) judge() []verdict {
	var out []verdict
	has := func(name string) bool {
		return slices.ContainsFunc(r.scenarios, func(s *scenario) bool { return s.name == name })
	}
	if has("clean") && slices.Contains(r.cfg.Contenders, cOras) {
		for _, dir := range []string{"pull", "push"} {
			o := r.cell("clean", dir, cOras)
			if o == nil || math.IsNaN(o.ratio) {
				continue
			}
			// Throughput ratio sturdy/oras = time oras / time sturdy.
			tp := o.ratio
			out = append(out, verdict{
				target: fmt.Sprintf("clean link, %s: sturdy within 3%% of plain oras-go's throughput", dir),
				met:    tp >= 0.97,
				detail: fmt.Sprintf("sturdy moved %.1f%% of oras-go's throughput (median of %d repetitions; per repetition: %s).", 100*tp, len(o.ratios), ratioList(o.ratios)),
			})
		}
	}
	if has("resets") {
		for _, dir := range []string{"pull", "push"} {
			s := r.cell("resets", dir, cSturdy)
			if s == nil {
				continue
			}
			var others []string
			for _, c := range r.cfg.Contenders {
				if c == cSturdy {
					continue
				}
				if o := r.cell("resets", dir, c); o != nil {
					state := "failed"
					if o.okCount == len(o.runs) {
						state = "succeeded"
					}
					others = append(others, fmt.Sprintf("`%s` %s with %.2fx on the wire", c, state, o.wire))
				}
			}
			out = append(out, verdict{
				target: fmt.Sprintf("resets, %s: sturdy succeeds with under 1.05x the payload on the wire", dir),
				met:    s.okCount == len(s.runs) && s.wire < 1.05,
				detail: fmt.Sprintf("sturdy: %s, %.3fx on the wire (%.3fx body bytes), %.2f s; %s.", s.okText(), s.wire, s.body, s.seconds, strings.Join(others, ", ")),
			})
		}
	}
	if has("resets") {
		if s := r.cell("resets", "push", cSturdy); s != nil {
			met := s.okCount == len(s.runs)
			worstKept := 0.0
			for _, x := range s.runs {
				u := x.uploads()
				kept := float64(u.kept) / float64(x.payload)
				worstKept = max(worstKept, kept)
				met = met && u.patches <= u.patchCuts+1 && kept <= 1.01
			}
			var others []string
			for _, c := range r.cfg.Contenders {
				if o := r.cell("resets", "push", c); o != nil && c != cSturdy {
					state := "failed"
					if o.okCount == len(o.runs) {
						state = "succeeded"
					}
					pay := float64(o.runs[0].payload)
					others = append(others, fmt.Sprintf("`%s` %s: %d PATCH for %d PATCH cuts (%d PUT cuts), wrote %.3fx, registry kept %.3fx",
						c, state, o.patches, o.patchCuts, o.putCuts, float64(o.wrote)/pay, float64(o.kept)/pay))
				}
			}
			pay := float64(s.runs[0].payload)
			out = append(out, verdict{
				target: "resets, push: sturdy succeeds with at most one PATCH per cut plus the final one, and the registry keeps at most 1.01x the payload (nothing it kept is sent again)",
				met:    met,
				detail: fmt.Sprintf("sturdy: %s, %d PATCH requests for %d cuts (%s per cut), client wrote %.3fx, registry kept %.3fx (worst run %.3fx; %s of it after the client's reset), %.2f s; %s.",
					s.okText(), s.patches, s.patchCuts, perCut(s.patches, s.patchCuts), float64(s.wrote)/pay, float64(s.kept)/pay, worstKept, fmtBytes(s.late), s.seconds, strings.Join(others, "; ")),
			})
		}
	}
	if has("memory") && has("clean") {
		for _, dir := range []string{"pull", "push"} {
			small, big := r.cell("memory", dir, cSturdy), r.cell("clean", dir, cSturdy)
			if small == nil || big == nil || small.maxRSS == 0 {
				continue
			}
			growth := float64(big.maxRSS)/float64(small.maxRSS) - 1
			target := fmt.Sprintf("memory flat as the blob grows, %s (peak RSS grows less than 10%% for a 4x larger blob)", dir)
			met := growth < 0.10
			if dir == "pull" {
				// A ranged pull holds up to its window whatever the blob;
				// a blob no larger than the window does not fill it.
				window := 2 * int64(transfer.DefaultPullConnections) * transfer.DefaultPullRangeSize
				target = fmt.Sprintf("memory flat as the blob grows, pull (peak RSS grows less than 10%% for a 4x larger blob, or stays within the ranged pull's window of %s plus 32 MiB)", fmtBytes(window))
				met = met || big.maxRSS <= window+32*mib
			}
			out = append(out, verdict{
				target: target,
				met:    met,
				detail: fmt.Sprintf("sturdy's peak RSS: %s at %s, %s at %s (%+.1f%%).", fmtBytes(small.maxRSS), fmtBytes(r.cfg.MemSize), fmtBytes(big.maxRSS), fmtBytes(r.cfg.Size), 100*growth),
			})
		}
	}
	out = append(out, r.judgeRanged()...)
	out = append(out, r.judgeMirror()...)
	out = append(out, r.judgeKilled()...)
	for _, sc := range r.scenarios {
		for _, dir := range sc.directions {
			for _, c := range []string{cSturdy, cSturdy1, cSturdyState} {
				if s := r.cell(sc.name, dir, c); s != nil && s.okCount < len(s.runs) {
					out = append(out, verdict{
						target: fmt.Sprintf("%s succeeds: %s, %s", c, sc.name, dir),
						detail: fmt.Sprintf("%d of %d runs failed; see the errors below.", len(s.runs)-s.okCount, len(s.runs)),
					})
				}
			}
		}
	}
	return out
}

// judgeRanged checks the targets of the ranged pull (issue 10). A target
// that needs more ranges than the run's blobs have (-quick sizes) is
// reported as not judged.
func (r *report) judgeRanged() []verdict {
	var out []verdict
	rs := transfer.DefaultPullRangeSize
	ranges := func(size int64) int64 { return (size + rs - 1) / rs }
	// Clean loopback: more connections must not cost throughput.
	if sc := r.scenario("clean"); sc != nil {
		if r.cell("clean", "pull", cSturdy1) != nil && r.cell("clean", "pull", cSturdy) != nil {
			tp, per := r.speedup("clean", "pull", cSturdy, cSturdy1)
			v := verdict{
				target: "clean link, pull: sturdy with its pull settings at zero (ranges where they help) within 3% of its own single stream's throughput (`sturdy-1conn`)",
				met:    tp >= 0.97,
				detail: fmt.Sprintf("sturdy moved %.1f%% of sturdy-1conn's throughput (median of %d repetitions; per repetition: %s).", 100*tp, len(per), ratioList(per)),
			}
			if n := ranges(sc.art.layers[0].Size); n < 2 {
				v.notJudged = fmt.Sprintf("the %s blob is under two ranges, so sturdy pulls it over one stream too", fmtBytes(sc.art.layers[0].Size))
			}
			out = append(out, v)
		}
	}
	// Under a per-connection cap: sturdy's throughput over plain oras-go's.
	for _, t := range []struct {
		scen string
		aim  float64
	}{{"capped-parallel", 6}, {"capped-parallel-mid", 3}} {
		sc := r.scenario(t.scen)
		if sc == nil || r.cell(t.scen, "pull", cSturdy) == nil || r.cell(t.scen, "pull", cOras) == nil {
			continue
		}
		size := sc.art.layers[0].Size
		v := verdict{target: fmt.Sprintf("%s/s per connection, pull of a %s blob: sturdy with its pull settings at zero (the defaults) at least %.0fx plain oras-go's throughput",
			fmtBytes(r.cfg.CappedBandwidth), fmtBytes(size), t.aim)}
		tp, per := r.speedup(t.scen, "pull", cSturdy, cOras)
		v.met = tp >= t.aim
		v.detail = fmt.Sprintf("sturdy moved %.2fx oras-go's throughput (per repetition: %s)", tp, ratioList(per))
		if s1, _ := r.speedup(t.scen, "pull", cSturdy1, cOras); !math.IsNaN(s1) {
			v.detail += fmt.Sprintf("; `sturdy-1conn` %.2fx", s1)
		}
		v.detail += "."
		if n := ranges(size); n < transfer.DefaultPullConnections {
			v.notJudged = fmt.Sprintf("the blob is %d ranges, fewer than the %d connections the target needs", n, transfer.DefaultPullConnections)
		}
		out = append(out, v)
	}
	// Resets on every connection: every byte sent once.
	if s := r.cell("capped-resets", "pull", cSturdy); s != nil {
		var others []string
		for _, c := range r.scenario("capped-resets").contenders {
			if o := r.cell("capped-resets", "pull", c); o != nil && c != cSturdy {
				state := "failed"
				if o.okCount == len(o.runs) {
					state = "succeeded"
				}
				others = append(others, fmt.Sprintf("`%s` %s after %.3fx blob GET body bytes", c, state, o.blobBody))
			}
		}
		worst := 0.0
		for _, x := range s.runs {
			worst = max(worst, float64(x.blobGet().ResponseBodyBytes)/float64(x.payload))
		}
		out = append(out, verdict{
			target: "capped and reset on every connection, pull: sturdy succeeds, and the registry sends at most 1.05x the payload as blob GET bodies",
			met:    s.okCount == len(s.runs) && worst <= 1.05,
			detail: fmt.Sprintf("sturdy: %s, %.3fx blob GET body bytes (worst run %.3fx) over %d blob GETs, %d of them cut, %.2f s; %s.",
				s.okText(), s.blobBody, worst, s.blobGets, s.blobCuts, s.seconds, strings.Join(others, ", ")),
		})
	}
	// Memory flat from the mid-sized to the big blob.
	if mid, big := r.scenario("capped-parallel-mid"), r.scenario("capped-parallel"); mid != nil && big != nil {
		small, large := r.cell(mid.name, "pull", cSturdy), r.cell(big.name, "pull", cSturdy)
		if small != nil && large != nil && small.maxRSS > 0 && small.peakHeap > 0 {
			midSize, bigSize := mid.art.layers[0].Size, big.art.layers[0].Size
			gHeap := growth(float64(small.peakHeap), float64(large.peakHeap))
			gRSS := growth(float64(small.maxRSS), float64(large.maxRSS))
			v := verdict{
				target: fmt.Sprintf("memory flat as the blob grows, ranged pull (peak heap and peak RSS grow less than 10%% from %s to %s)", fmtBytes(midSize), fmtBytes(bigSize)),
				met:    gHeap < 0.10 && gRSS < 0.10,
				detail: fmt.Sprintf("sturdy's peak heap: %s, then %s (%+.1f%%); peak RSS: %s, then %s (%+.1f%%); heap allocated during the copy: %s, then %s; the window is %s per blob.",
					fmtBytes(int64(small.peakHeap)), fmtBytes(int64(large.peakHeap)), 100*gHeap, fmtBytes(small.maxRSS), fmtBytes(large.maxRSS), 100*gRSS,
					fmtBytes(int64(small.alloc)), fmtBytes(int64(large.alloc)), fmtBytes(rangedWindow)),
			}
			if midSize < rangedWindow {
				v.notJudged = fmt.Sprintf("the %s blob does not fill the %s window", fmtBytes(midSize), fmtBytes(rangedWindow))
			}
			out = append(out, v)
		}
	}
	return out
}

func (c *cell) okText() string {
	switch {
	case c.okCount == len(c.runs):
		return "yes"
	case len(c.runs) == 1:
		return "**no**: " + shortErr(c.runs[0].errText())
	case c.okCount == 0:
		return fmt.Sprintf("**no** (0/%d): %s", len(c.runs), shortErr(c.runs[0].errText()))
	}
	return fmt.Sprintf("**%d/%d**", c.okCount, len(c.runs))
}

func (c *cell) notes() string {
	var n []string
	x := c.runs[len(c.runs)-1]
	switch x.contender {
	case cSturdy:
		var retries, resumes int
		var waited float64
		for _, y := range c.runs {
			retries, resumes, waited = max(retries, y.res.Retries), max(resumes, y.res.Resumes), max(waited, y.res.BackoffS)
		}
		if retries > 0 || resumes > 0 {
			n = append(n, fmt.Sprintf("%d retries, %d resumed, waited %.1f s", retries, resumes, waited))
		}
	case cRetry6:
		var attempts int
		for _, y := range c.runs {
			attempts = max(attempts, y.res.MaxBlobAttempts)
		}
		if attempts > 1 {
			n = append(n, fmt.Sprintf("%d attempts on one blob", attempts))
		}
	}
	if len(c.ratios) > 1 && x.contender != cSturdy {
		n = append(n, "ratios "+ratioList(c.ratios))
	}
	return strings.Join(n, "; ")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func ratioText(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", v)
}

func ratioList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, "/")
}

// shortErr names the cause of a failure in a few words.
func shortErr(s string) string {
	for _, k := range []struct{ needle, short string }{
		{"context deadline exceeded", "caller deadline"},
		{"connection reset by peer", "connection reset"},
		{"broken pipe", "broken pipe"},
		{"unexpected EOF", "unexpected EOF"},
		{"503", "503"},
		{"stalled", "stalled"},
		{"EOF", "EOF"},
	} {
		if strings.Contains(s, k.needle) {
			return k.short
		}
	}
	return oneLine(s, 60)
}

// uploadState matches distribution's signed upload state in the URLs that
// oras-go quotes in its errors: noise in a report.
var uploadState = regexp.MustCompile(`_state=[^&"\s]*`)

func oneLine(s string, n int) string {
	s = uploadState.ReplaceAllString(strings.Join(strings.Fields(s), " "), "_state=…")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ReplaceAll(s, "`", "'")
}

// fmtBytes formats sizes as the library's summaries do.
var fmtBytes = progress.FormatBytes

func commandLine(args []string) string {
	parts := []string{"go -C examples run ./bench"}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + a + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.1f GiB", float64(kb)/float64(1<<20))
		}
	}
	return ""
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeReport writes md to path, keeping hand-written notes that follow
// notesMarker in the existing file.
func writeReport(path, md string) error {
	notes := notesMarker + "\n"
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), notesMarker); i >= 0 {
			notes = string(old[i:])
		}
	}
	return os.WriteFile(path, []byte(strings.TrimRight(md, "\n")+"\n\n"+notes), 0o644)
}

func openLayout(dir string) (*oci.Store, error) { return oci.New(dir) }

// originBlobBytes is the blob GET body bytes the origin sent in the run;
// mirrorBlobBytes the cache's.
func (r *run) originBlobBytes() int64 { return r.blobGet().ResponseBodyBytes }

func (r *run) mirrorBlobBytes() int64 {
	if r.mirrorStats == nil {
		return 0
	}
	return r.mirrorStats.Kinds[registrytest.BlobGet].ResponseBodyBytes
}

// renderMirror is the mirror scenario's table: what each source served.
func (r *report) renderMirror(p func(string, ...any), sc *scenario) {
	p("Pull through the mirror: **origin blob bytes** is the blob GET response body bytes the origin sent (`Stats().Kinds[BlobGet].ResponseBodyBytes`), ")
	p("**mirror blob bytes** the cache's; **sturdy's sources** is its Tracker summary's `Sources`. **vs oras** is the throughput over plain oras-go's from the origin.\n\n")
	p("| dir | contender | ok | time | throughput | vs oras | origin blob bytes | origin/payload | mirror blob bytes | sturdy's sources |\n")
	p("|---|---|---|--:|--:|--:|--:|--:|--:|---|\n")
	for _, c := range sc.contenders {
		cl := r.cell(sc.name, "pull", c)
		if cl == nil {
			continue
		}
		x := cl.runs[len(cl.runs)-1]
		vs, _ := r.speedup(sc.name, "pull", c, cOras)
		tp := "n/a"
		if cl.okCount > 0 && cl.seconds > 0 {
			tp = fmtBytes(int64(float64(sc.art.payload)/cl.seconds)) + "/s"
		}
		var srcs []string
		for _, n := range slices.Sorted(maps.Keys(x.res.Sources)) {
			srcs = append(srcs, n+" "+fmtBytes(x.res.Sources[n]))
		}
		p("| pull | %s | %s | %.2f s | %s | %s | %s | %.4f | %s | %s |\n", c, cl.okText(), cl.seconds, tp, ratioText(vs),
			fmtBytes(x.originBlobBytes()), float64(x.originBlobBytes())/float64(x.payload), fmtBytes(x.mirrorBlobBytes()), strings.Join(srcs, ", "))
	}
	p("\n")
}

// judgeMirror: with the mirror, sturdy is faster than plain oras-go from
// the capped origin, and the origin serves at most 1% of the blob bytes.
func (r *report) judgeMirror() []verdict {
	sc := r.scenario("mirror")
	s := r.cell("mirror", "pull", cSturdy)
	if sc == nil || s == nil {
		return nil
	}
	var out []verdict
	if r.cell("mirror", "pull", cOras) != nil {
		tp, per := r.speedup("mirror", "pull", cSturdy, cOras)
		v := verdict{
			target: fmt.Sprintf("mirror, pull: sturdy with the pull-through cache as a mirror faster than plain oras-go from the origin (capped at %s/s per connection)", fmtBytes(r.cfg.MirrorBandwidth)),
			met:    tp > 1,
			detail: fmt.Sprintf("sturdy moved %.2fx oras-go's throughput (per repetition: %s).", tp, ratioList(per)),
		}
		if r.cfg.Quick {
			v.notJudged = "at -quick sizes the capped origin is fast enough that the times are start-up noise"
		}
		out = append(out, v)
	}
	worst := 0.0
	for _, x := range s.runs {
		worst = max(worst, float64(x.originBlobBytes())/float64(x.payload))
	}
	x := s.runs[len(s.runs)-1]
	out = append(out, verdict{
		target: "mirror, pull: sturdy succeeds and the origin serves at most 1% of the blob bytes",
		met:    s.okCount == len(s.runs) && worst <= 0.01,
		detail: fmt.Sprintf("sturdy: %s; the origin sent %s of blob GET bodies (%.4fx the payload, worst run), the cache %s.",
			s.okText(), fmtBytes(x.originBlobBytes()), worst, fmtBytes(x.mirrorBlobBytes())),
	})
	return out
}

// renderKilled is the killed scenario's table: both runs together.
func (r *report) renderKilled(p func(string, ...any), sc *scenario) {
	p("Killed and run again: **killed at** is the payload bytes the registry had sent (pull) or read (push) when the worker got SIGKILL (polled every 2 ms, so a little past half); ")
	p("**first run** is the killed process's wall time (start-up included), **re-run** the second run's copy time, **total time** their sum. ")
	p("**total wire/payload** is the wire bytes of both runs in the payload's direction per byte of payload; **reused** is sturdy's `Summary.Reused` in the re-run (bytes the `StateDir` kept).\n\n")
	p("| dir | contender | ok | killed at | first run | re-run | total time | first run wire/payload | total wire/payload | reused |\n")
	p("|---|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, dir := range sc.directions {
		for _, c := range sc.contendersFor(dir) {
			cl := r.cell(sc.name, dir, c)
			if cl == nil {
				continue
			}
			x := cl.runs[len(cl.runs)-1]
			k := x.kill
			if k == nil {
				continue
			}
			at := "not killed (ended first)"
			if k.killed {
				at = fmt.Sprintf("%s (%.1f%%)", fmtBytes(k.at), 100*float64(k.at)/float64(x.payload))
			}
			p("| %s | %s | %s | %s | %.2f s | %.2f s | %.2f s | %.3f | %.3f | %s |\n", dir, c, cl.okText(), at, k.firstSeconds, k.secondSeconds, x.res.Seconds,
				float64(k.firstWire)/float64(x.payload), float64(x.wire())/float64(x.payload), fmtBytes(x.res.Reused))
		}
	}
	p("\n")
}

// judgeKilled: with a StateDir, the killed run and its re-run move at
// most 1.1x the payload between them.
func (r *report) judgeKilled() []verdict {
	sc := r.scenario("killed")
	if sc == nil {
		return nil
	}
	var out []verdict
	for _, dir := range sc.directions {
		s := r.cell("killed", dir, cSturdyState)
		if s == nil {
			continue
		}
		x := s.runs[len(s.runs)-1]
		var others []string
		for _, c := range sc.contendersFor(dir) {
			if o := r.cell("killed", dir, c); o != nil && c != cSturdyState {
				others = append(others, fmt.Sprintf("`%s` %.3fx in %.2f s", c, o.wire, o.seconds))
			}
		}
		v := verdict{
			target: fmt.Sprintf("killed at 50%%, %s: sturdy with a StateDir finishes on the re-run with at most 1.1x the payload on the wire over both runs", dir),
			met:    s.okCount == len(s.runs) && s.wire <= 1.1 && x.kill != nil && x.kill.killed,
			detail: fmt.Sprintf("sturdy-state: %s, %.3fx on the wire in %.2f s, %s reused; %s.", s.okText(), s.wire, s.seconds, fmtBytes(x.res.Reused), strings.Join(others, ", ")),
		}
		if x.kill == nil || !x.kill.killed {
			v.detail += " The first run ended before the kill."
		}
		if dir == "pull" && x.kill != nil && x.kill.at < 8*mib {
			// A pull records what it kept every 8 MiB or second.
			v.notJudged = fmt.Sprintf("the kill came after %s, before a pull's first checkpoint of its kept bytes (every 8 MiB or second)", fmtBytes(x.kill.at))
		}
		out = append(out, v)
	}
	return out
}

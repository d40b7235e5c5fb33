// Command bench runs sturdy side by side with oras-go on one in-process
// registry (examples/registrytest) under the same faults, and prints (and
// optionally writes) a markdown report: success, wall time as a ratio to
// sturdy's, bytes on the wire per byte of payload, and peak memory.
//
//	go -C examples run ./bench                       # everything: 512 MiB blobs, 1 GiB capped
//	go -C examples run ./bench -quick                # CI smoke: 8 to 24 MiB blobs
//	go -C examples run ./bench -scenarios clean,resets -out ../BENCHMARKS.md
//	go -C examples run ./bench -scenarios capped-parallel,capped-parallel-mid,capped-resets
//
// Contenders (-contenders):
//
//	oras          oras.Copy; remote.Repository with a plain auth.Client (no retry transport)
//	oras-dc       oras.Copy; auth.DefaultClient (oras-go's retry transport underneath)
//	retry6        per-blob loop of 6 attempts around oras-go Fetch/Push, each from byte 0
//	sturdy        transfer.Copy; its pull settings at zero, so a blob of 16 MiB or more
//	              is fetched as 8 MiB ranges over 8 connections where one connection
//	              does not keep up (its first ranges, timed, decide)
//	sturdy-1conn  transfer.Copy with PullConnections: 1 (one stream per blob); pulls
//	              only, the one direction where it differs from sturdy
//	sturdy-state  transfer.Copy with a StateDir shared by a killed run and its
//	              re-run; the killed scenario only
//
// The mirror scenario pulls through distribution's pull-through cache
// (sturdy with Options.Mirrors) while the origin is capped; the killed
// scenario SIGKILLs each worker once the registry has sent (or read) half
// the payload and runs it again.
//
// Every contender run is a separate process (this binary re-executed), so
// its peak RSS (getrusage of the child) is its own; the registry lives in
// this process. Before each run the faults are cleared and injected again
// and the counters reset; pushes go to a repository of their own and pulls
// to a fresh OCI layout, so nothing is skipped because it exists.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// config is everything a benchmark run depends on.
type config struct {
	Size          int64 // the single blob of most scenarios
	MemSize       int64 // the smaller blob of the memory-flat comparison
	ResetPeriod   int64
	Bursts        int
	RetryAfter    time.Duration
	Bandwidth     int64 // bytes/s per connection, both directions
	SmallBlobs    int
	SmallBlobSize int64
	Reps          int           // repetitions of the clean-link scenario
	Deadline      time.Duration // caller context of every run
	StallDeadline time.Duration // caller context in the stall scenario
	StallTimeout  time.Duration // sturdy's StallTimeout
	Backoff       time.Duration // initial backoff of retry6 and sturdy
	MaxBackoff    time.Duration
	Concurrency   int
	Scenarios     []string
	Contenders    []string
	Out           string
	CPUProfiles   string // directory for one CPU profile per run
	Warmup        bool   // one unmeasured pull before the measurements
	Quick         bool
	Args          []string // the command line, for the report
	Log           func(format string, args ...any)

	// The capped-* scenarios: ranged pulls under a per-connection
	// download cap, of a big blob and a mid-sized one.
	CappedSize      int64
	CappedMidSize   int64
	CappedBandwidth int64 // bytes/s per connection, download only
	// CappedResetPeriod is the reset period of capped-resets; 0 means
	// ResetPeriod.
	CappedResetPeriod int64

	// MirrorBandwidth caps every connection to the origin in the mirror
	// scenario, download only; the pull-through cache is not capped.
	MirrorBandwidth int64
	// KilledBandwidth caps every connection in the killed scenario, both
	// directions (0: none), so that a small blob is still in flight when
	// the kill comes.
	KilledBandwidth int64
}

func defaultConfig() config {
	return config{
		Size: 512 * mib,
		// Not a multiple of the 8 MiB ranges of a ranged pull: a reset
		// in blob coordinates at every 32 MiB would only ever land on a
		// range's last byte, and a ranged pull would never resume.
		ResetPeriod:   30 * mib,
		Bursts:        3,
		RetryAfter:    time.Second,
		Bandwidth:     64 * mib,
		SmallBlobs:    1000,
		SmallBlobSize: 4 * kib,
		Reps:          7,
		Deadline:      3 * time.Minute,
		StallDeadline: 30 * time.Second,
		StallTimeout:  3 * time.Second,
		Backoff:       500 * time.Millisecond,
		MaxBackoff:    4 * time.Second,
		Concurrency:   4,
		Scenarios:     allScenarios,
		Contenders:    []string{cOras, cOrasDC, cRetry6, cSturdy, cSturdy1, cSturdyState},
		Warmup:        true,

		// One connection takes 32 s per GiB: plain oras-go's runs of the
		// capped scenarios are most of their time.
		CappedSize:      gib,
		CappedMidSize:   256 * mib,
		CappedBandwidth: 32 * mib,

		// Plain oras-go from the origin: 32 s for 512 MiB.
		MirrorBandwidth: 16 * mib,
	}
}

// quickConfig is the CI smoke test: small blobs, short waits.
func quickConfig() config {
	c := defaultConfig()
	c.Quick = true
	c.Size = 8 * mib
	c.ResetPeriod = 1 * mib
	c.Bursts = 1
	c.Bandwidth = 32 * mib
	// 3 and 2 ranges of 8 MiB: the ranged path runs, but over too few
	// ranges for the parallel targets, which only full runs judge. Resets
	// every half range: each range is cut once in its body (and resumed)
	// and reset once at its end.
	c.CappedSize = 24 * mib
	c.CappedMidSize = 16 * mib
	c.CappedBandwidth = 64 * mib
	c.CappedResetPeriod = 4 * mib
	c.MirrorBandwidth = 64 * mib
	c.KilledBandwidth = 32 * mib
	c.SmallBlobs = 50
	c.Deadline = time.Minute
	c.StallDeadline = 2 * time.Second
	// Above half the Retry-After of the 503 scenario: see the note on the
	// destination watchdog in BENCHMARKS.md.
	c.StallTimeout = 750 * time.Millisecond
	c.Backoff = 20 * time.Millisecond
	c.MaxBackoff = 100 * time.Millisecond
	return c
}

func main() {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(runWorker(spec))
	}
	os.Exit(cli(os.Args[1:]))
}

func cli(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	def := defaultConfig()
	quick := fs.Bool("quick", false, "small sizes and short waits, for a CI smoke run")
	size := fs.String("size", "", "size of the single blob (default 512MiB, -quick 8MiB)")
	reset := fs.String("reset", "", "reset period in blob coordinates (default 30MiB, -quick 1MiB)")
	bw := fs.String("bandwidth", "", "per-connection bandwidth cap of the bandwidth scenario (default 64MiB)")
	cappedSize := fs.String("capped-size", "", "blob of the capped-parallel and capped-resets scenarios (default 1GiB, -quick 24MiB)")
	cappedMid := fs.String("capped-mid-size", "", "blob of the capped-parallel-mid scenario (default 256MiB, -quick 16MiB)")
	cappedBW := fs.String("capped-bandwidth", "", "per-connection download cap of the capped-* scenarios (default 32MiB, -quick 64MiB)")
	cappedReset := fs.String("capped-reset", "", "reset period of the capped-resets scenario (default: -reset's, -quick 4MiB)")
	small := fs.Int("small-blobs", 0, "layers of the many-small-blobs scenario (default 1000, -quick 50)")
	smallSize := fs.String("small-blob-size", "", "size of each small layer (default 4KiB)")
	reps := fs.Int("reps", def.Reps, "repetitions of the clean-link scenario (median reported)")
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma list of scenarios: "+strings.Join(allScenarios, ","))
	cont := fs.String("contenders", strings.Join(def.Contenders, ","), "comma list of contenders: "+strings.Join(def.Contenders, ","))
	backoff := fs.Duration("backoff", 0, "initial backoff of retry6 and sturdy (default 500ms, -quick 20ms)")
	stallDeadline := fs.Duration("stall-deadline", 0, "caller deadline in the stall scenario (default 30s)")
	stallTimeout := fs.Duration("stall-timeout", 0, "sturdy's StallTimeout (default 3s)")
	conc := fs.Int("concurrency", def.Concurrency, "blobs moved at once, every contender")
	out := fs.String("out", "", "write the markdown report to this file")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile of every run into this directory (<scenario>-<dir>-<contender>-<rep>.pprof)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := def
	if *quick {
		cfg = quickConfig()
	}
	var err error
	setSize := func(dst *int64, v string) {
		if v != "" && err == nil {
			*dst, err = parseSize(v)
		}
	}
	setSize(&cfg.Size, *size)
	setSize(&cfg.ResetPeriod, *reset)
	setSize(&cfg.Bandwidth, *bw)
	setSize(&cfg.CappedSize, *cappedSize)
	setSize(&cfg.CappedMidSize, *cappedMid)
	setSize(&cfg.CappedBandwidth, *cappedBW)
	setSize(&cfg.CappedResetPeriod, *cappedReset)
	setSize(&cfg.SmallBlobSize, *smallSize)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if *small > 0 {
		cfg.SmallBlobs = *small
	}
	if *backoff > 0 {
		cfg.Backoff = *backoff
		cfg.MaxBackoff = 8 * *backoff
	}
	if *stallDeadline > 0 {
		cfg.StallDeadline = *stallDeadline
	}
	if *stallTimeout > 0 {
		cfg.StallTimeout = *stallTimeout
	}
	cfg.Reps = max(*reps, 1)
	cfg.Concurrency = max(*conc, 1)
	cfg.Scenarios = splitList(*scen)
	cfg.Contenders = splitList(*cont)
	cfg.Out = *out
	cfg.CPUProfiles = *cpuprof
	cfg.Args = args
	cfg.Log = func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := runBench(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Println(rep.markdown)
	if cfg.Out != "" {
		if err := writeReport(cfg.Out, rep.markdown); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "wrote", cfg.Out)
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseSize reads a size flag with the examples' parser (ui.ParseSize)
// and insists on a positive count.
func parseSize(s string) (int64, error) {
	n, err := ui.ParseSize(s)
	if err == nil && n <= 0 {
		err = fmt.Errorf("size %q: must be positive", s)
	}
	return n, err
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

const (
	repoName = "demo/model"
	tag      = "v1"
	// minResetEvery keeps every reset period above the progress rule:
	// an attempt must commit Retry.MinProgress to reset the attempt
	// count, and the stall fault sits at half a period.
	minResetEvery = 2 * retrypolicy.DefaultMinProgress
)

// config is what the flags set.
type config struct {
	size         int64
	resetEvery   int64
	faults       bool
	compare      bool
	keep         bool
	stallTimeout time.Duration
	concurrency  int
	out          io.Writer
	bars         bool // out is a terminal: draw progress bars
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	cfg.out, cfg.bars = os.Stdout, ui.IsTerminal(os.Stdout)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	_, err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, errOut io.Writer) (config, error) {
	cfg := config{}
	size, reset := sizeFlag(1<<30), sizeFlag(32<<20)
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Var(&size, "size", "total size of the generated model: bytes, or with a unit (1GiB, 256MiB, 500MB)")
	fs.BoolVar(&cfg.faults, "faults", true, "inject faults on the wire; -faults=false runs on a clean link")
	fs.Var(&reset, "reset-every", "reset blob transfers at every multiple of this many bytes of the blob")
	fs.BoolVar(&cfg.compare, "compare", false, "also push and pull with plain oras.Copy through the same faults, and compare")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (model files, registry storage, pulled layout)")
	fs.DurationVar(&cfg.stallTimeout, "stall-timeout", 3*time.Second, "cut a transfer attempt after this long without a byte moving")
	fs.IntVar(&cfg.concurrency, "concurrency", transfer.DefaultConcurrency, "blobs moved at once")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.size, cfg.resetEvery = int64(size), int64(reset)
	if cfg.size < 64<<10 {
		return cfg, fmt.Errorf("-size %d: at least 64 KiB", cfg.size)
	}
	if cfg.resetEvery < minResetEvery {
		return cfg, fmt.Errorf("-reset-every %d: at least %s, so that each attempt counts as progress", cfg.resetEvery, ui.Bytes(minResetEvery))
	}
	if cfg.concurrency < 1 || cfg.stallTimeout <= 0 {
		return cfg, errors.New("-concurrency and -stall-timeout must be positive")
	}
	return cfg, nil
}

// sizeFlag is a byte count flag that takes units.
type sizeFlag int64

func (s *sizeFlag) String() string { return ui.Bytes(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := ui.ParseSize(v)
	*s = sizeFlag(n)
	return err
}

// result is what a run did, for the test to check.
type result struct {
	root       ocispec.Descriptor
	push, pull phaseResult
	verified   verified
	mirror     phaseResult   // the pull through a mirror that dies half-way
	plain      []plainResult // with -compare
	// The pull with a state directory, interrupted half-way, and the run
	// that continues it.
	interrupted, continued phaseResult
}

// demo holds what the steps of a run share.
type demo struct {
	cfg  config
	out  io.Writer
	work string // temporary directory for everything on disk
}

// run generates the model, starts the registry, pushes, pulls, verifies
// and, with -compare, runs plain oras.Copy. It returns an error when
// sturdy's transfer or the verification failed.
func run(ctx context.Context, cfg config) (*result, error) {
	if cfg.out == nil {
		cfg.out = io.Discard
	}
	work, err := os.MkdirTemp("", "sturdy-demo-*")
	if err != nil {
		return nil, err
	}
	if cfg.keep {
		defer fmt.Fprintf(cfg.out, "\nkept %s (model/, registry/, pulled/)\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	d := &demo{cfg: cfg, out: cfg.out, work: work}

	src, err := d.makeModel(ctx)
	if err != nil {
		return nil, err
	}
	defer src.store.Close()

	// Cuts as on a real network: the registry is still receiving a broken
	// PATCH when the client asks where the upload stands.
	reg, err := registrytest.Start(registrytest.WithStorageDir(filepath.Join(work, "registry")), registrytest.WithRealisticCuts(0, 0))
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	// Repository's client is oras-go's auth client without a retrying
	// transport underneath (what transfer.NewClient builds): sturdy's
	// per-blob loop is the only retry layer.
	repo, err := reg.Repository(repoName)
	if err != nil {
		return nil, err
	}
	remoteRef := reg.Reference(repoName, tag)
	res := &result{root: src.root}

	res.push = d.phase(ctx, "push", filepath.Join(work, "model"), remoteRef, reg, d.pushPlan(), func(ctx context.Context, opts transfer.Options) error {
		_, err := transfer.Copy(ctx, src.store, tag, repo, tag, opts)
		return err
	})
	if res.push.err != nil {
		return res, fmt.Errorf("push: %w", res.push.err)
	}

	pulledDir := filepath.Join(work, "pulled")
	pulled, err := oci.New(pulledDir)
	if err != nil {
		return res, err
	}
	res.pull = d.phase(ctx, "pull", remoteRef, "oci-layout:"+pulledDir, reg, d.pullPlan(src), func(ctx context.Context, opts transfer.Options) error {
		root, err := transfer.Copy(ctx, repo, tag, pulled, tag, opts)
		if err == nil && root.Digest != src.root.Digest {
			err = fmt.Errorf("pulled root %s, pushed %s", root.Digest, src.root.Digest)
		}
		return err
	})
	if res.pull.err != nil {
		return res, fmt.Errorf("pull: %w", res.pull.err)
	}

	if res.verified, err = verifyLayout(ctx, pulledDir, tag, src.root); err != nil {
		fmt.Fprintf(d.out, "\nverify FAILED: %v\n", err)
		return res, fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(d.out, "\nverified: %d blobs (%s) re-hashed from the pulled layout, all %d descriptors under %s present, %s -> %s\n",
		res.verified.blobs, ui.Bytes(res.verified.bytes), res.verified.nodes, ui.ShortDigest(string(src.root.Digest)), tag, src.root.Digest)

	if res.mirror, err = d.mirrorPull(ctx, reg, src); err != nil {
		return res, fmt.Errorf("pull through a mirror: %w", err)
	}

	if res.interrupted, res.continued, err = d.continuedPull(ctx, reg, src); err != nil {
		return res, fmt.Errorf("continued pull: %w", err)
	}

	if cfg.compare {
		res.plain = d.compare(ctx, reg, src, res)
	}
	return res, nil
}

// continuedPull pulls the model with Options.StateDir, interrupts the copy
// (as Ctrl-C would) once half of it has arrived, and runs the same copy
// again: the second run hands on the kept bytes from disk and fetches
// only the rest, which its summary shows as reused.
func (d *demo) continuedPull(ctx context.Context, reg *registrytest.Registry, src *source) (first, second phaseResult, err error) {
	repo, err := reg.Repository(repoName)
	if err != nil {
		return first, second, err
	}
	state, dir := filepath.Join(d.work, "state"), filepath.Join(d.work, "pulled-continued")
	layout, err := oci.New(dir)
	if err != nil {
		return first, second, err
	}
	half := d.cfg.size / 2
	fmt.Fprintf(d.out, "\ncontinue: pulls with -state-dir %s; the first run is interrupted after %s (as Ctrl-C would), the second continues\n", state, ui.Bytes(half))
	copyWithState := func(ctx context.Context, opts transfer.Options) error {
		opts.StateDir = state
		_, err := transfer.Copy(ctx, repo, tag, layout, tag, opts)
		return err
	}
	first = d.phase(ctx, "cut", reg.Reference(repoName, tag), "oci-layout:"+dir, reg, faultPlan{},
		func(ctx context.Context, opts transfer.Options) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			seen := progress.NewTracker()
			opts.Observer = progress.Multi(opts.Observer, seen, progress.Func(func(e progress.Event) {
				if e.Kind == progress.Progressed && seen.Snapshot().Done >= half {
					cancel()
				}
			}))
			err := copyWithState(ctx, opts)
			if errors.Is(err, context.Canceled) {
				return nil // the interruption is the point
			}
			if err == nil {
				return errors.New("the copy finished before it could be interrupted")
			}
			return err
		})
	if first.err != nil {
		return first, second, first.err
	}
	second = d.phase(ctx, "continue", reg.Reference(repoName, tag), "oci-layout:"+dir, reg, faultPlan{}, copyWithState)
	if second.err != nil {
		return first, second, second.err
	}
	v, err := verifyLayout(ctx, dir, tag, src.root)
	if err != nil {
		return first, second, fmt.Errorf("verify: %w", err)
	}
	sent := first.stats.WireDown + second.stats.WireDown
	fmt.Fprintf(d.out, "\nverified: %d blobs (%s) re-hashed after the interrupted and the continued run; %s came from kept state, not the wire;\n"+
		"the registry sent %s over both runs (%.2fx the model: what the first run fetched ahead was kept too)\n",
		v.blobs, ui.Bytes(v.bytes), ui.Bytes(second.summary.Reused), ui.Bytes(sent), float64(sent)/float64(v.bytes))
	return first, second, nil
}

// mirrorPull pulls the model again, this time through a pull-through cache
// of the registry (distribution's proxy mode) given as a mirror, which
// dies once it has served half the model: the blobs in flight go on from
// the byte they reached on the origin, and the summary says how many bytes
// each source served.
func (d *demo) mirrorPull(ctx context.Context, origin *registrytest.Registry, src *source) (phaseResult, error) {
	cache, err := registrytest.Start(registrytest.WithPullThrough(origin), registrytest.WithStorageDir(filepath.Join(d.work, "cache")))
	if err != nil {
		return phaseResult{}, err
	}
	defer cache.Close()
	mirror, err := cache.Repository(repoName)
	if err != nil {
		return phaseResult{}, err
	}
	repo, err := origin.Repository(repoName)
	if err != nil {
		return phaseResult{}, err
	}
	dir := filepath.Join(d.work, "pulled-via-mirror")
	layout, err := oci.New(dir)
	if err != nil {
		return phaseResult{}, err
	}
	half := d.cfg.size / 2
	fmt.Fprintf(d.out, "\nmirror: %s, a pull-through cache of the registry; it dies after serving %s\n", cache.Host(), ui.Bytes(half))
	r := d.phase(ctx, "mirror", "cache "+cache.Host()+" then "+origin.Reference(repoName, tag), "oci-layout:"+dir, origin, faultPlan{},
		func(ctx context.Context, opts transfer.Options) error {
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				t := time.NewTicker(time.Millisecond)
				defer t.Stop()
				for cache.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes < half {
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
				cache.Close()
			}()
			opts.Mirrors = []transfer.Mirror{{Name: "cache", Target: mirror}}
			root, err := transfer.Copy(ctx, repo, tag, layout, tag, opts)
			if err == nil && root.Digest != src.root.Digest {
				err = fmt.Errorf("pulled root %s, pushed %s", root.Digest, src.root.Digest)
			}
			return err
		})
	if r.err != nil {
		return r, r.err
	}
	v, err := verifyLayout(ctx, dir, tag, src.root)
	if err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(d.out, "\nverified: %d blobs (%s) pulled through the mirror and the origin, re-hashed\n", v.blobs, ui.Bytes(v.bytes))
	return r, nil
}

// makeModel writes the model files and opens them as an oras source.
func (d *demo) makeModel(ctx context.Context) (*source, error) {
	dir := filepath.Join(d.work, "model")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	files := layout(d.cfg.size)
	start := time.Now()
	if err := generate(dir, files); err != nil {
		return nil, err
	}
	src, err := openSource(ctx, dir, files, tag)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, f := range src.files {
		total += f.Size
	}
	fmt.Fprintf(d.out, "model: %d files, %s, generated and hashed in %s\n", len(src.files), ui.Bytes(total), ui.Duration(time.Since(start)))
	for _, f := range src.files {
		fmt.Fprintf(d.out, "  %-34s %10s  %s\n", ui.Label(f), ui.Bytes(f.Size), f.Digest)
	}
	return src, nil
}

func (d *demo) pushPlan() faultPlan {
	if !d.cfg.faults {
		return faultPlan{}
	}
	return pushFaults(d.cfg.resetEvery)
}

func (d *demo) pullPlan(src *source) faultPlan {
	if !d.cfg.faults {
		return faultPlan{}
	}
	shards := src.files[len(src.files)-3:]
	return pullFaults(d.cfg.resetEvery, shards[0].Digest, shards[1].Digest)
}

// options are sturdy's production defaults except where a demo must show
// things quickly: a short first backoff and a stall timeout of seconds.
// Keep StallTimeout above half the longest wait a source may sit out
// (the 2 s of the 503 burst): pulling into a layout, sturdy cuts a
// destination that received nothing for 2 x StallTimeout even while the
// source waits for a Retry-After.
func (d *demo) options(obs progress.Observer) transfer.Options {
	return transfer.Options{
		Retry:        retrypolicy.Config{InitialBackoff: 200 * time.Millisecond},
		Concurrency:  d.cfg.concurrency,
		StallTimeout: d.cfg.stallTimeout,
		Observer:     obs,
	}
}

// phaseResult is one sturdy transfer: what the tracker and the registry
// saw.
type phaseResult struct {
	name    string
	summary progress.Summary
	stats   registrytest.Stats
	elapsed time.Duration
	err     error
	plan    faultPlan
	applied []int // requests each of plan's rules acted on
}

// phase runs one transfer with the plan's faults on the wire, a display
// and a tracker, and reports it.
func (d *demo) phase(ctx context.Context, name, from, to string, reg *registrytest.Registry, plan faultPlan,
	copy func(context.Context, transfer.Options) error) phaseResult {
	fmt.Fprintf(d.out, "\n== %s: %s -> %s\n", name, from, to)
	plan.describe(d.out)
	faults := plan.inject(reg)
	reg.ResetStats()

	tracker := progress.NewTracker()
	display := d.display(name)
	start := time.Now()
	err := copy(ctx, d.options(progress.Multi(tracker, display)))
	elapsed := time.Since(start)
	display.Close()
	clearPlan(reg)

	r := phaseResult{name: name, summary: tracker.Summary(), stats: reg.Stats(), elapsed: elapsed, err: err,
		plan: plan, applied: applied(faults)}
	d.report(r)
	return r
}

func (d *demo) display(phase string) ui.Display {
	if d.cfg.bars {
		return ui.NewBars(d.out, phase)
	}
	return ui.NewLines(d.out, phase)
}

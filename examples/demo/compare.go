package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// plainResult is one plain oras.Copy run.
type plainResult struct {
	name    string
	err     error
	elapsed time.Duration
	wire    int64 // bytes on the registry's sockets in the transfer's direction
	stalled bool  // gave up by the demo's deadline, not by an error
}

// compare runs the same push and pull with plain oras.Copy, through
// oras-go's default client stack (auth.Client over retry.NewTransport:
// requests are retried, a broken body is not, nothing resumes), with the
// same faults, and prints how it fared against sturdy.
func (d *demo) compare(ctx context.Context, reg *registrytest.Registry, src *source, res *result) []plainResult {
	client := &auth.Client{
		Client: &http.Client{Transport: retry.NewTransport(reg.Client().Transport)},
		Cache:  auth.NewCache(),
	}
	repo := func(name string) (*remote.Repository, error) {
		r, err := remote.NewRepository(reg.Host() + "/" + name)
		if err == nil {
			r.PlainHTTP, r.Client = true, client
		}
		return r, err
	}
	fmt.Fprintf(d.out, "\n== compare: plain oras.Copy with oras-go's default client (retries requests, not broken bodies; no resume, no stall detection)\n")

	var out []plainResult
	// Into another repository, so that nothing sturdy pushed is skipped.
	pushRepo, err := repo(repoName + "-plain")
	if err != nil {
		fmt.Fprintf(d.out, "  push  cannot start: %v\n", err)
		return nil
	}
	push := d.plainRun(ctx, "push", reg, d.pushPlan(), res.push, func(ctx context.Context) error {
		_, err := oras.Copy(ctx, src.store, tag, pushRepo, tag, oras.DefaultCopyOptions)
		return err
	})
	out = append(out, push)

	pullRepo, _ := repo(repoName)
	layout, err := oci.New(filepath.Join(d.work, "pulled-plain"))
	if err != nil {
		fmt.Fprintf(d.out, "  pull  cannot start: %v\n", err)
		return out
	}
	pull := d.plainRun(ctx, "pull", reg, d.pullPlan(src), res.pull, func(ctx context.Context) error {
		_, err := oras.Copy(ctx, pullRepo, tag, layout, tag, oras.DefaultCopyOptions)
		return err
	})
	return append(out, pull)
}

// plainRun runs one plain copy under the phase's faults. A stall would
// hold oras.Copy until its context ends, so it gets a deadline: several
// times what sturdy took, at least 30 s.
func (d *demo) plainRun(ctx context.Context, name string, reg *registrytest.Registry, plan faultPlan, sturdy phaseResult,
	copy func(context.Context) error) plainResult {
	plan.inject(reg)
	reg.ResetStats()
	cctx, cancel := context.WithTimeout(ctx, max(30*time.Second, 3*sturdy.elapsed))
	start := time.Now()
	err := copy(cctx)
	elapsed := time.Since(start)
	cancel()
	clearPlan(reg)

	r := plainResult{name: name, err: err, elapsed: elapsed}
	r.stalled = errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
	stats, sturdyWire := reg.Stats(), sturdy.stats.WireUp
	r.wire = stats.WireUp
	if name == "pull" {
		r.wire, sturdyWire = stats.WireDown, sturdy.stats.WireDown
	}

	var outcome string
	switch {
	case r.stalled:
		outcome = "gave up (stalled) after " + ui.Duration(elapsed)
	case err != nil:
		outcome = fmt.Sprintf("FAILED after %s: %s", ui.Duration(elapsed), retrypolicy.ShortReason(err))
	default:
		outcome = "ok in " + ui.Duration(elapsed)
	}
	fmt.Fprintf(d.out, "  %-5s %s; wire %s = %.2fx sturdy's %s, time %.2fx sturdy's %s\n", name, outcome,
		ui.Bytes(r.wire), ratio(r.wire, sturdyWire), ui.Bytes(sturdyWire),
		ratio(int64(elapsed), int64(sturdy.elapsed)), ui.Duration(sturdy.elapsed))
	if err != nil && !r.stalled {
		fmt.Fprintf(d.out, "        %s\n", transfer.Redact(err.Error()))
	}
	return r
}

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

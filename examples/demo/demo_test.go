package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sturdyoci/sturdy/examples/registrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, registrytest.IgnoreLeaks()...) }

// TestDemo runs the whole demo on a small model: resets every 4 MiB, the
// 503 bursts and the stalls. Both phases must finish, verified, having
// retried and resumed, with little sent twice.
//
// The stall timeout stays above half the 2 s that the 503 burst on shard 1
// waits: a pull into an OCI layout cuts an attempt whose source moved
// nothing for 2 x StallTimeout, even while the source waits out a
// Retry-After (a library bug, reported).
func TestDemo(t *testing.T) {
	t.Parallel() // most of each run is waiting on stalls and Retry-After
	var out bytes.Buffer
	res, err := run(t.Context(), config{
		size: 24 << 20, resetEvery: 4 << 20, faults: true,
		stallTimeout: 2 * time.Second, concurrency: 4, out: &out,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, p := range []phaseResult{res.push, res.pull} {
		s := p.summary
		t.Logf("%s in %s: %d retries, %d resumed, payload %d, wire %d (%.2fx), registry up %d down %d",
			p.name, p.elapsed, s.Retries, s.Resumes, s.Payload, s.Wire, s.Overhead(), p.stats.WireUp, p.stats.WireDown)
		if s.Blobs != 8 || s.Completed != s.Blobs || s.Failed != 0 {
			t.Errorf("%s: %d blobs, %d completed, %d failed; want all 8 completed", p.name, s.Blobs, s.Completed, s.Failed)
		}
		if s.Retries == 0 || s.Resumes == 0 {
			t.Errorf("%s: %d retries, %d resumes; the faults should cause both", p.name, s.Retries, s.Resumes)
		}
	}
	// What the receiver read, against the payload. For a pull sturdy is
	// the receiver; for a push the registry is (sturdy's own count of a
	// push includes what socket buffers held when a reset discarded it).
	if o := res.pull.summary.Overhead(); o >= 1.3 {
		t.Errorf("pull: wire/payload %.2f, want < 1.3", o)
	}
	if o := float64(res.push.stats.WireUp) / float64(res.push.summary.Payload); o >= 1.3 {
		t.Errorf("push: registry received %.2fx the payload, want < 1.3", o)
	}
	if m := res.mirror.summary; m.Completed != 8 || m.Sources["cache"] == 0 || m.Sources["origin"] == 0 {
		t.Errorf("through the mirror: %d completed, sources %v; want 8, and bytes from both the cache and the origin", m.Completed, m.Sources)
	}
	if c := res.continued.summary; c.Reused == 0 || c.Completed+c.Skipped != 8 || c.Failed != 0 {
		t.Errorf("continued: %d completed, %d skipped, %d failed, %d reused; want all 8 done and kept bytes reused", c.Completed, c.Skipped, c.Failed, c.Reused)
	}
	if res.verified.blobs != 8 || res.verified.nodes != 8 {
		t.Errorf("verified %d blobs and %d descriptors, want 8 and 8", res.verified.blobs, res.verified.nodes)
	}
	log := out.String()
	for _, want := range []string{
		`push  retrying .*: stalled;`, `pull  retrying .*: stalled;`,
		`retrying .*: unavailable \(HTTP 503\); waiting 1s`, `retrying .*: connection reset;`,
		`push  resumed `, `pull  resumed `, `verified: 8 blobs`,
		`reused from kept state`, `continuing from the byte it reached on origin`, `sources  cache .*, origin `,
	} {
		if !regexp.MustCompile(want).MatchString(log) {
			t.Errorf("output lacks %s", want)
		}
	}
	// The cache is closed once it has written half the model; how many of
	// its responses were still being written then depends on the socket
	// buffers. One connection broken after progress is a transient failure
	// and leaves the mirror in use; two, or a connection refused later, set
	// it aside.
	failedMidBlob := regexp.MustCompile(`mirror note .*a mirror failed mid-blob`)
	if n := len(failedMidBlob.FindAllString(log, -1)); n >= 2 && !strings.Contains(log, "mirror cache set aside") {
		t.Errorf("the cache failed %d blobs mid-way and was not set aside", n)
	}
	if t.Failed() {
		t.Log(log)
	}
}

// TestCompare runs plain oras.Copy through the same faults: it must fail
// where sturdy finished.
func TestCompare(t *testing.T) {
	t.Parallel() // most of each run is waiting on stalls and Retry-After
	var out bytes.Buffer
	res, err := run(t.Context(), config{
		size: 8 << 20, resetEvery: 2 << 20, faults: true, compare: true,
		stallTimeout: 2 * time.Second, concurrency: 4, out: &out,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if len(res.plain) != 2 {
		t.Fatalf("%d plain runs, want 2\n%s", len(res.plain), out.String())
	}
	for _, p := range res.plain {
		if p.err == nil {
			t.Errorf("plain %s succeeded through the faults", p.name)
		}
	}
	if log := out.String(); !strings.Contains(log, "push  FAILED") || strings.Contains(log, "_state=ST") {
		t.Errorf("compare report wrong (or leaks upload state):\n%s", log)
	}
}

// TestCleanLink: without faults nothing is retried and nothing is sent
// twice.
func TestCleanLink(t *testing.T) {
	t.Parallel() // most of each run is waiting on stalls and Retry-After
	res, err := run(context.Background(), config{
		size: 4 << 20, resetEvery: 32 << 20, stallTimeout: time.Second, concurrency: 2, out: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []phaseResult{res.push, res.pull} {
		if s := p.summary; s.Retries != 0 || s.Overhead() > 1.001 {
			t.Errorf("%s on a clean link: %d retries, %.3fx", p.name, s.Retries, s.Overhead())
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-size", "256MiB", "-reset-every", "8M", "-faults=false"}, io.Discard)
	if err != nil || cfg.size != 256<<20 || cfg.resetEvery != 8<<20 || cfg.faults {
		t.Errorf("parseFlags = %+v, %v", cfg, err)
	}
	if cfg, _ := parseFlags(nil, io.Discard); cfg.size != 1<<30 || !cfg.faults || cfg.resetEvery != 32<<20 {
		t.Errorf("defaults = %+v", cfg)
	}
	for _, args := range [][]string{{"-size", "1KiB"}, {"-size", "lots"}, {"-reset-every", "1MiB"}, {"extra"}, {"-concurrency", "0"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

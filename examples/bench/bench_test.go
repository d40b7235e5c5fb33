package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the benchmark's worker process:
// runBench re-executes os.Executable() with the job in the environment.
func TestMain(m *testing.M) {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(runWorker(spec))
	}
	os.Exit(m.Run())
}

// TestQuick runs every scenario with every contender at -quick sizes (8 MiB
// blobs, 16 and 24 MiB for the capped ranged pulls, resets every 1 MiB, 50
// small blobs) and checks only that the run completes, renders, and that
// sturdy (and sturdy-1conn) succeeds everywhere. No timing is asserted.
func TestQuick(t *testing.T) {
	cfg := quickConfig()
	cfg.Reps = 2 // enough to exercise interleaving and medians
	cfg.Warmup = false
	cfg.Log = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := runBench(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rep.runs {
		seen[r.scenario+"/"+r.direction+"/"+r.contender] = true
		if (r.contender == cSturdy || r.contender == cSturdy1) && !r.ok() {
			t.Errorf("%s failed: %s %s: %s", r.contender, r.scenario, r.direction, r.errText())
		}
		if u := r.uploads(); r.direction == "push" && r.procErr == "" && r.kill == nil && r.res.ClientWrote < u.kept {
			// The registry cannot keep more than the client wrote (a
			// killed run's client wrote in two processes, one unreported).
			t.Errorf("%s push %s: client wrote %d bytes, the registry kept %d upload body bytes", r.scenario, r.contender, r.res.ClientWrote, u.kept)
		}
		if r.scenario == "resets" && r.direction == "push" {
			u := r.uploads()
			t.Logf("resets push %s: %d PATCH, cuts %d PATCH / %d PUT, client wrote %d, registry kept %d (%d late), payload %d",
				r.contender, u.patches, u.patchCuts, u.putCuts, r.res.ClientWrote, u.kept, u.late, r.payload)
		}
	}
	for _, sc := range rep.scenarios {
		for _, dir := range sc.directions {
			for _, c := range sc.contendersFor(dir) {
				if !seen[sc.name+"/"+dir+"/"+c] {
					t.Errorf("no run of %s %s %s", sc.name, dir, c)
				}
			}
		}
	}
	if len(rep.scenarios) != len(allScenarios) {
		t.Errorf("ran %d scenarios, want %d", len(rep.scenarios), len(allScenarios))
	}
	for _, want := range []string{"# sturdy benchmark", "## Targets", "time vs sturdy", "wire/payload", "peak RSS", "PATCH per cut", "client wrote",
		"vs 1conn", "blob GET body/payload", "Peak memory of the ranged pull",
		"origin blob bytes", "mirror blob bytes", "killed at", "total wire/payload"} {
		if !strings.Contains(rep.markdown, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	out := t.TempDir() + "/BENCHMARKS.md"
	if err := writeReport(out, rep.markdown); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte("old\n"+notesMarker+"\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(out, rep.markdown); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "hand-written") || strings.Contains(string(b), "old\n") {
		t.Errorf("writeReport did not keep the notes below the marker and replace the rest")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512MiB": 512 * mib, "8M": 8 * mib, "4KiB": 4 * kib, "1GiB": gib, "100": 100} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseSize("lots"); err == nil {
		t.Error("parseSize(lots) succeeded")
	}
}

package retrypolicy

import (
	"math"
	"testing"
	"time"
)

func TestComputePerAttemptTimeout(t *testing.T) {
	const GiB = int64(1) << 30
	cases := []struct {
		size   int64
		want   time.Duration
		within time.Duration
	}{
		{-1, 5 * time.Minute, 0},
		{0, 5 * time.Minute, 0},
		{1, 5 * time.Minute, 0},
		{GiB, 5 * time.Minute, 0},
		{10 * GiB, 2048 * time.Second, 0},   // ~34 min
		{70 * GiB, 14336 * time.Second, 0},  // ~4 h
		{140 * GiB, 28672 * time.Second, 0}, // ~8 h, just under the cap
		{150 * GiB, 8 * time.Hour, 0},
		{1 << 40, 8 * time.Hour, 0},
		{math.MaxInt64, 8 * time.Hour, 0},
	}
	for _, c := range cases {
		got := ComputePerAttemptTimeout(c.size)
		if d := got - c.want; d > c.within || d < -c.within {
			t.Errorf("ComputePerAttemptTimeout(%d) = %s, want %s", c.size, got, c.want)
		}
	}
}

func TestPerAttemptTimeoutOverrides(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		size int64
		want time.Duration
	}{
		{"fixed", Config{AttemptTimeout: time.Second}, 1 << 40, time.Second},
		{"none", Config{AttemptTimeout: -1}, 1 << 40, 0},
		{"throughput", Config{MinThroughput: 1 << 20, SafetyFactor: 1, MinAttemptTimeout: time.Second}, 60 << 20, time.Minute},
		{"floor", Config{MinAttemptTimeout: time.Hour}, 1, time.Hour},
		{"ceiling", Config{MaxAttemptTimeout: time.Hour}, 1 << 40, time.Hour},
		{"small ceiling lowers default floor", Config{MaxAttemptTimeout: time.Minute}, 1, time.Minute},
		{"max int64 with tiny throughput", Config{MinThroughput: 1, SafetyFactor: 1e6}, math.MaxInt64, 8 * time.Hour},
		// Invalid values are sanitized here; Do rejects them.
		{"NaN factor", Config{SafetyFactor: math.NaN()}, 10 << 30, 2048 * time.Second},
		{"negative throughput", Config{MinThroughput: -1}, 10 << 30, 2048 * time.Second},
		{"min > max", Config{MinAttemptTimeout: time.Hour, MaxAttemptTimeout: time.Minute}, 1, 5 * time.Minute},
	}
	for _, c := range cases {
		if got := c.cfg.PerAttemptTimeout(c.size); got != c.want {
			t.Errorf("%s: PerAttemptTimeout(%d) = %s, want %s", c.name, c.size, got, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"5", 5 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{"-3", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{"Sun, 29 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sunday, 29-Nov-26 12:01:00 GMT", time.Minute, true},
		{"Sun Nov 29 12:00:10 2026", 10 * time.Second, true},
		{"Sun, 29 Nov 2026 11:00:00 GMT", 0, true},
		// Beyond int64 seconds is a huge ask, not a missing one: the loop
		// caps it like any other.
		{"99999999999999999999", time.Duration(math.MaxInt64/int64(time.Second)) * time.Second, true},
		{"-99999999999999999999", 0, false},
		{"9999999999999", time.Duration(math.MaxInt64/int64(time.Second)) * time.Second, true},
	}
	for _, c := range cases {
		got, ok := ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"5", "Sun, 29 Nov 2026 12:00:30 GMT", "-1", "1e9", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("ParseRetryAfter(%q) = %s, %v", s, d, ok)
		}
	})
}

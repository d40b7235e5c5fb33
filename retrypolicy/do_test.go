package retrypolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSleep records the waits instead of sleeping them.
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	return ctx.Err()
}

func (f *fakeSleep) total() (sum time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.waits {
		sum += w
	}
	return sum
}

func fastConfig(fs *fakeSleep) Config {
	return Config{sleep: fs.sleep}
}

func TestDoSucceedsAfterRetries(t *testing.T) {
	fs := &fakeSleep{}
	cfg := fastConfig(fs)
	var infos []RetryInfo
	cfg.OnRetry = func(ri RetryInfo) { infos = append(infos, ri) }
	calls := 0
	err := Do(context.Background(), cfg, 1<<20, func(ctx context.Context) error {
		calls++
		if AttemptNumber(ctx) != calls {
			t.Errorf("AttemptNumber = %d, want %d", AttemptNumber(ctx), calls)
		}
		if calls < 3 {
			return syscall.ECONNRESET
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 || len(infos) != 2 || len(fs.waits) != 2 {
		t.Fatalf("calls=%d infos=%d waits=%d", calls, len(infos), len(fs.waits))
	}
	for i, ri := range infos {
		if ri.Attempt != i+1 || ri.Reason != "connection reset" || ri.Backoff != fs.waits[i] {
			t.Errorf("info %d = %+v, slept %s", i, ri, fs.waits[i])
		}
	}
}

func TestDoBackoffBoundsAndCap(t *testing.T) {
	fs := &fakeSleep{}
	cfg := Config{sleep: fs.sleep, MaxAttempts: 12, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second}
	err := Do(context.Background(), cfg, 0, func(context.Context) error { return io.ErrUnexpectedEOF })
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 12 {
		t.Fatalf("err = %v", err)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "after 12 attempts") {
		t.Fatalf("err = %v", err)
	}
	if len(fs.waits) != 11 {
		t.Fatalf("waits = %v", fs.waits)
	}
	interval := time.Second
	for i, w := range fs.waits {
		lo, hi := time.Duration(float64(interval)*0.5), min(time.Duration(float64(interval)*1.5), 10*time.Second)
		if w < lo || w > hi {
			t.Errorf("wait %d = %s, want in [%s, %s]", i, w, lo, hi)
		}
		interval = min(interval*2, 10*time.Second)
	}
}

func TestDoMaxAttemptsOne(t *testing.T) {
	calls := 0
	fs := &fakeSleep{}
	cfg := Config{sleep: fs.sleep, MaxAttempts: 1, AttemptTimeout: 20 * time.Millisecond,
		OnRetry: func(RetryInfo) { t.Error("OnRetry after the last attempt") }}
	err := Do(context.Background(), cfg, 0, func(ctx context.Context) error {
		calls++
		<-ctx.Done() // a hung connection still ends: no retry is not no deadline
		return ctx.Err()
	})
	if calls != 1 || !errors.Is(err, ErrAttemptTimeout) || ShortReason(err) != "attempt timeout" {
		t.Fatalf("calls=%d err=%v", calls, err)
	}
}

func TestDoPermanentStopsAtOnce(t *testing.T) {
	fs := &fakeSleep{}
	calls := 0
	err := Do(context.Background(), fastConfig(fs), 0, func(context.Context) error {
		calls++
		return errResp(http.StatusForbidden)
	})
	if calls != 1 || len(fs.waits) != 0 || IsRetryable(err) {
		t.Fatalf("calls=%d waits=%v err=%v", calls, fs.waits, err)
	}
	if !strings.Contains(err.Error(), "after 1 attempt:") {
		t.Fatalf("err = %v", err)
	}
}

func TestDoUnknownErrorIsNotRetried(t *testing.T) {
	calls := 0
	_ = Do(context.Background(), fastConfig(&fakeSleep{}), 0, func(context.Context) error {
		calls++
		return errors.New("permission problem of some new kind")
	})
	if calls != 1 {
		t.Fatalf("unknown error retried: %d calls", calls)
	}
}

func TestDoAttemptTimeoutIsRetryableUnderLiveParent(t *testing.T) {
	fs := &fakeSleep{}
	cfg := Config{sleep: fs.sleep, MaxAttempts: 3, AttemptTimeout: 5 * time.Millisecond}
	calls := 0
	err := Do(context.Background(), cfg, 0, func(ctx context.Context) error {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("attempt has no deadline")
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if calls != 3 || !errors.Is(err, ErrAttemptTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("calls=%d err=%v", calls, err)
	}
}

func TestDoDerivesDeadlineFromSize(t *testing.T) {
	const size = 100 << 30
	want := ComputePerAttemptTimeout(size)
	err := Do(context.Background(), Config{}, size, func(ctx context.Context) error {
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("no deadline")
		}
		if got := time.Until(dl); got > want || got < want-time.Minute {
			t.Errorf("deadline in %s, want ~%s", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = Do(context.Background(), Config{AttemptTimeout: -1}, size, func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); ok {
			t.Error("AttemptTimeout < 0 must set no deadline")
		}
		return nil
	})
}

func TestDoCancelDuringBackoffReturnsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{InitialBackoff: time.Hour, MaxBackoff: time.Hour} // the real sleep
	started := make(chan struct{})
	cfg.OnRetry = func(RetryInfo) { close(started) }
	done := make(chan error, 1)
	go func() {
		done <- Do(ctx, cfg, 0, func(context.Context) error { return syscall.ECONNRESET })
	}()
	<-started
	t0 := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("err = %v lost the last attempt's error", err)
		}
		if d := time.Since(t0); d > 100*time.Millisecond {
			t.Fatalf("took %s to return after cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not return after cancel")
	}
}

func TestDoCancelDuringAttempt(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	err := Do(ctx, fastConfig(&fakeSleep{}), 0, func(actx context.Context) error {
		cancel(errors.New("user pressed ctrl-c"))
		return syscall.ECONNRESET // the attempt fails with something else as ctx ends
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "ctrl-c") {
		t.Fatalf("err = %v", err)
	}
	if IsRetryable(err) {
		t.Fatal("a cancelled Do must not look retryable")
	}
}

func TestDoCancelledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err := Do(ctx, Config{}, 0, func(context.Context) error { called = true; return nil })
	if called || !errors.Is(err, context.Canceled) {
		t.Fatalf("called=%v err=%v", called, err)
	}
}

func TestDoRetryAfterHonouredAndCapped(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retryAft  time.Duration
		maxRA     time.Duration
		wantWait  time.Duration
		exactWait bool
	}{
		{"longer than MaxBackoff", 5 * time.Minute, 0, 5 * time.Minute, true},
		{"capped", 2 * time.Hour, 30 * time.Minute, 30 * time.Minute, true},
		{"ignored", 5 * time.Minute, -1, 0, false},
		{"shorter than backoff keeps backoff", time.Millisecond, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeSleep{}
			cfg := Config{sleep: fs.sleep, MaxAttempts: 2, InitialBackoff: time.Second, MaxBackoff: 2 * time.Second, MaxRetryAfter: tc.maxRA}
			_ = Do(context.Background(), cfg, 0, func(context.Context) error {
				return &StatusError{StatusCode: 503, RetryAfter: tc.retryAft}
			})
			if len(fs.waits) != 1 {
				t.Fatalf("waits = %v", fs.waits)
			}
			w := fs.waits[0]
			if tc.exactWait && w != tc.wantWait {
				t.Fatalf("wait = %s, want %s", w, tc.wantWait)
			}
			if !tc.exactWait && (w < 500*time.Millisecond || w > 2*time.Second) {
				t.Fatalf("wait = %s, want the computed backoff", w)
			}
		})
	}
}

// A server asking for 27777h is waited MaxRetryAfter, and the error's text
// says what was waited, not what was asked.
func TestDoRetryAfterTextShowsTheWaitUsed(t *testing.T) {
	fs := &fakeSleep{}
	cfg := Config{sleep: fs.sleep, MaxAttempts: 2, MaxRetryAfter: 15 * time.Minute}
	var infos []RetryInfo
	cfg.OnRetry = func(ri RetryInfo) { infos = append(infos, ri) }
	err := Do(context.Background(), cfg, 0, func(context.Context) error {
		return WithRetryAfter(&StatusError{StatusCode: 429, RetryAfter: 27777 * time.Hour}, 27777*time.Hour)
	})
	if len(fs.waits) != 1 || fs.waits[0] != 15*time.Minute {
		t.Fatalf("waits = %v", fs.waits)
	}
	for _, msg := range []string{err.Error(), infos[0].Err.Error()} {
		if strings.Contains(msg, "27777h") || !strings.Contains(msg, "15m0s") {
			t.Fatalf("text %q should show the 15m wait used, not the ask", msg)
		}
	}
}

func TestDoResumableProgressResetsBudget(t *testing.T) {
	// 256 MiB over a link that breaks every 32 MiB finishes with 3 attempts.
	const size, every = 256 << 20, 32 << 20
	fs := &fakeSleep{}
	var offset int64
	cfg := Config{sleep: fs.sleep, MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: time.Minute}
	var infos []RetryInfo
	cfg.OnRetry = func(ri RetryInfo) { infos = append(infos, ri) }
	calls := 0
	err := DoResumable(context.Background(), cfg, size, func() int64 { return offset }, func(ctx context.Context) error {
		calls++
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > ComputePerAttemptTimeout(size-offset) {
			t.Errorf("attempt deadline not derived from the remaining bytes")
		}
		offset = min(offset+every, size)
		if offset < size {
			return syscall.ECONNRESET
		}
		return nil
	})
	if err != nil {
		t.Fatalf("err = %v after %d calls", err, calls)
	}
	if calls != 8 {
		t.Fatalf("calls = %d, want 8", calls)
	}
	for _, ri := range infos {
		if !ri.Progressed || ri.Backoff != 0 {
			t.Errorf("info %+v: progress must reset the backoff and retry at once", ri)
		}
	}
}

// After a progressing attempt the backoff starts over: the next failure
// without progress waits the initial backoff again, not a doubled one.
func TestDoResumableBackoffStartsOverAfterProgress(t *testing.T) {
	fs := &fakeSleep{}
	var offset int64
	calls := 0
	cfg := Config{sleep: fs.sleep, MaxAttempts: 4, InitialBackoff: time.Second, MaxBackoff: time.Minute}
	_ = DoResumable(context.Background(), cfg, 1<<30, func() int64 { return offset }, func(context.Context) error {
		calls++
		if calls == 3 {
			offset += 2 << 20 // the third attempt progresses
		}
		return syscall.ECONNRESET
	})
	// waits: 1 s, 2 s, then 0 after progress, then 1 s, 2 s, 4 s (±50%).
	if len(fs.waits) != 5 || fs.waits[2] != 0 || fs.waits[3] < 500*time.Millisecond || fs.waits[3] > 1500*time.Millisecond {
		t.Fatalf("waits = %v", fs.waits)
	}
}

// A proxy that closes every connection after 600 KiB: no attempt moves
// MinProgress, but every two together do. The transfer finishes, each
// attempt reconnecting at once (600 KiB is more than the pace,
// MinProgress/(MaxAttempts-1)).
func TestDoResumableProgressAddsUpOverAttempts(t *testing.T) {
	fs := &fakeSleep{}
	const size, every = 8 << 20, 600 << 10
	var offset int64
	calls := 0
	var infos []RetryInfo
	cfg := Config{sleep: fs.sleep, MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: time.Minute}
	cfg.OnRetry = func(ri RetryInfo) { infos = append(infos, ri) }
	err := DoResumable(context.Background(), cfg, size, func() int64 { return offset }, func(context.Context) error {
		calls++
		offset = min(offset+every, size)
		if offset < size {
			return syscall.ECONNRESET
		}
		return nil
	})
	if err != nil {
		t.Fatalf("err = %v after %d calls", err, calls)
	}
	if want := (size + every - 1) / every; calls != want {
		t.Fatalf("calls = %d, want %d", calls, want)
	}
	for _, w := range fs.waits {
		if w != 0 {
			t.Fatalf("waits = %v: an attempt on pace reconnects at once", fs.waits)
		}
	}
	// The count restarts at every attempt that completes a MiB since the
	// last restart: the 2nd (1200 KiB), the 4th, ...
	var restarts []int
	for _, ri := range infos {
		if ri.Progressed {
			restarts = append(restarts, ri.Attempt)
		}
	}
	if len(restarts) < 2 || restarts[0] != 2 || restarts[1] != 4 {
		t.Fatalf("count restarted at attempts %v, want 2, 4, ...", restarts)
	}
}

// Progress below the pace (MinProgress/(MaxAttempts-1) per attempt) backs off,
// and what the attempts add up to still counts: here two slow attempts
// and a fast one cross MinProgress together.
func TestDoResumableSlowAttemptsBackOff(t *testing.T) {
	fs := &fakeSleep{}
	var offset int64
	calls := 0
	cfg := Config{sleep: fs.sleep, MaxAttempts: 4, InitialBackoff: time.Second, MaxBackoff: time.Minute}
	err := DoResumable(context.Background(), cfg, 1<<30, func() int64 { return offset }, func(context.Context) error {
		calls++
		switch calls {
		case 1, 2:
			offset += 100 << 10 // below the pace of 342 KiB
		case 3:
			offset += 900 << 10 // 1100 KiB since the start: the count restarts
		case 6: // the restarted count allows MaxAttempts-1 more attempts
			return nil
		}
		return syscall.ECONNRESET
	})
	if err != nil || calls != 6 {
		t.Fatalf("err = %v after %d calls, want success after 6", err, calls)
	}
	// waits: backoff, backoff, 0 (restart), then 1 s, 2 s (±50%).
	if len(fs.waits) != 5 || fs.waits[0] == 0 || fs.waits[1] == 0 || fs.waits[2] != 0 ||
		fs.waits[3] < 500*time.Millisecond || fs.waits[3] > 1500*time.Millisecond {
		t.Fatalf("waits = %v", fs.waits)
	}
}

// A transfer that starts over (a new upload session) counts its progress
// from its new start, not from the 10 MiB it had reached before, whether
// it went back between attempts or during one.
func TestRetrierStartOverCountsFromNewStart(t *testing.T) {
	ctx := context.Background()
	fs := &fakeSleep{}
	r, err := NewRetrier(Config{sleep: fs.sleep, MaxAttempts: 3}, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	attempt := func(from, to int64) error {
		_, cancel := r.Begin(ctx, from)
		defer cancel(nil)
		return r.Retry(ctx, syscall.ECONNRESET, to)
	}
	steps := []struct{ from, to int64 }{
		{0, 10 << 20},      // progress: the count restarts at 10 MiB
		{0, 2 << 20},       // started over before the attempt: 2 MiB of progress
		{2 << 20, 1 << 20}, // went back during the attempt: no progress
		{1 << 20, 3 << 20}, // 2 MiB from where it went back
		{3 << 20, 5 << 20},
	}
	for i, st := range steps {
		if err := attempt(st.from, st.to); err != nil {
			t.Fatalf("attempt %d (%d -> %d): %v", i+1, st.from, st.to, err)
		}
	}
}

// A planned reconnect (Continue) is not an attempt: the attempt number in
// the context, Attempts and what Retry reports stay those of the attempt
// that is going on, and the attempt deadline is computed on what is left.
func TestRetrierContinueIsNotAnAttempt(t *testing.T) {
	ctx := context.Background()
	var infos []RetryInfo
	r, err := NewRetrier(Config{sleep: (&fakeSleep{}).sleep, MaxAttempts: 3, OnRetry: func(ri RetryInfo) { infos = append(infos, ri) }}, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := r.Continue(ctx, 0) // before any Begin: it is Begin
	cancel(nil)
	if n := AttemptNumber(actx); n != 1 || r.Attempts() != 1 {
		t.Fatalf("first Continue: attempt %d, Attempts %d; want 1, 1", n, r.Attempts())
	}
	actx, cancel = r.Continue(ctx, 8<<20)
	if n := AttemptNumber(actx); n != 1 || r.Attempts() != 1 {
		t.Fatalf("Continue: attempt %d, Attempts %d; want 1, 1", n, r.Attempts())
	}
	if _, ok := actx.Deadline(); !ok {
		t.Fatal("Continue set no attempt deadline")
	}
	if err := r.Retry(ctx, syscall.ECONNRESET, 8<<20); err != nil {
		t.Fatal(err)
	}
	cancel(nil)
	if len(infos) != 1 || infos[0].Attempt != 1 {
		t.Fatalf("retries %+v: want one, of attempt 1", infos)
	}
	actx, cancel = r.Begin(ctx, 8<<20)
	defer cancel(nil)
	if n := AttemptNumber(actx); n != 2 {
		t.Fatalf("the Begin after a failure: attempt %d, want 2", n)
	}
}

func TestDoResumableNoProgressFails(t *testing.T) {
	fs := &fakeSleep{}
	var offset int64 = 100 << 20
	calls := 0
	cfg := Config{sleep: fs.sleep, MaxAttempts: 3}
	err := DoResumable(context.Background(), cfg, 1<<30, func() int64 { return offset }, func(context.Context) error {
		calls++
		offset += 1 << 10 // a trickle below MinProgress is no progress
		return syscall.ECONNRESET
	})
	if calls != 3 || err == nil {
		t.Fatalf("calls=%d err=%v", calls, err)
	}
}

// The retry wall-clock must not depend on the blob size: only the deadline
// does. Run both with tiny real backoffs, side by side.
func TestDoSizeInvariance(t *testing.T) {
	run := func(size int64) (time.Duration, int) {
		calls := 0
		cfg := Config{MaxAttempts: 5, InitialBackoff: 2 * time.Millisecond, MaxBackoff: 4 * time.Millisecond}
		t0 := time.Now()
		_ = Do(context.Background(), cfg, size, func(context.Context) error { calls++; return syscall.ECONNRESET })
		return time.Since(t0), calls
	}
	small, n1 := run(1 << 20)
	big, n2 := run(1 << 40)
	if n1 != n2 {
		t.Fatalf("attempts differ: %d vs %d", n1, n2)
	}
	// Both sleep 4 waits of at most 1.5x4 ms; the rest is scheduling.
	if d := small - big; d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Fatalf("1 MiB took %s, 1 TiB took %s", small, big)
	}
	// And with the fake clock and the default policy (waits of 5, 10, 20,
	// 40 and 80 s, each ±50%) the sums lie in the same bounds.
	for _, size := range []int64{1 << 20, 1 << 40} {
		fs := &fakeSleep{}
		_ = Do(context.Background(), fastConfig(fs), size, func(context.Context) error { return syscall.ECONNRESET })
		if tot := fs.total(); tot < 77500*time.Millisecond || tot > 232500*time.Millisecond {
			t.Errorf("size %d: total backoff %s outside the jitter bounds", size, tot)
		}
	}
}

func TestDoInvalidConfig(t *testing.T) {
	for _, cfg := range []Config{
		{MaxAttempts: -1},
		{SafetyFactor: math.NaN()},
		{SafetyFactor: math.Inf(1)},
		{MinAttemptTimeout: time.Hour, MaxAttemptTimeout: time.Minute},
		{InitialBackoff: time.Hour, MaxBackoff: time.Second},
		{MinThroughput: -5},
		{MinProgress: -1},
	} {
		called := false
		err := Do(context.Background(), cfg, 0, func(context.Context) error { called = true; return nil })
		if called || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: called=%v err=%v", cfg, called, err)
		}
		if cfg.Validate() == nil {
			t.Errorf("%+v: Validate accepted it", cfg)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config invalid: %v", err)
	}
}

func TestRetrierCancelNamesTheCause(t *testing.T) {
	fs := &fakeSleep{}
	r, err := NewRetrier(Config{sleep: fs.sleep, MaxAttempts: 2}, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	actx, cancel := r.Begin(ctx, 0)
	go r.Cancel(ErrStalled) // a watchdog on another goroutine
	<-actx.Done()
	err = r.Retry(ctx, urlErr(context.Canceled), 0)
	cancel(nil)
	if err != nil || len(fs.waits) != 1 {
		t.Fatalf("a stall must be retried: %v", err)
	}
	actx, cancel = r.Begin(ctx, 0)
	if AttemptNumber(actx) != 2 {
		t.Fatalf("attempt = %d", AttemptNumber(actx))
	}
	r.Cancel(ErrStalled)
	err = r.Retry(ctx, urlErr(context.Canceled), 0)
	cancel(nil)
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 2 || !errors.Is(err, ErrStalled) || ShortReason(err) != "stalled" {
		t.Fatalf("err = %v (%q)", err, ShortReason(err))
	}
	r.Cancel(ErrStalled) // between attempts: a no-op
}

// The caller's classifier comes after explicit marks and the caller's
// cancellation, before the table; false defers to the table.
func TestClassifyHook(t *testing.T) {
	fs := &fakeSleep{}
	errMine := errors.New("mine")
	calls := 0
	cfg := Config{sleep: fs.sleep, MaxAttempts: 5, Classify: func(err error) (Verdict, bool) {
		calls++
		if errors.Is(err, errMine) {
			return Verdict{Retryable: false, Reason: "mine"}, true
		}
		return Verdict{}, false
	}}
	// The hook makes a normally retryable error permanent.
	err := Do(context.Background(), cfg, 0, func(context.Context) error { return fmt.Errorf("%w: %w", errMine, syscall.ECONNRESET) })
	var re *Error
	if !errors.As(err, &re) || re.Attempts != 1 {
		t.Fatalf("err = %v", err)
	}
	// An explicit mark wins over the hook.
	n := 0
	err = Do(context.Background(), cfg, 0, func(context.Context) error {
		n++
		if n < 3 {
			return Transient(errMine)
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Transient(errMine): err %v after %d attempts", err, n)
	}
	// Cancellation never reaches the hook.
	before := calls
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = Do(ctx, cfg, 0, func(context.Context) error { return context.Canceled })
	if calls != before {
		t.Fatal("the hook saw the caller's cancellation")
	}
}

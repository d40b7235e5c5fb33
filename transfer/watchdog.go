package transfer

import (
	"sync/atomic"
	"time"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

type watchdogConfig struct {
	stall    time.Duration // < 0: off
	lowLimit int64         // bytes/s; < 0: off
	lowTime  time.Duration
}

func (w watchdogConfig) off() bool { return w.stall < 0 && w.lowLimit < 0 }

// watch checks moved every tick and calls cut with ErrStalled when it did
// not change for the stall timeout, or with ErrTooSlow when it grew by less
// than lowLimit x lowTime over the last lowTime. It returns a stop function
// that ends its goroutine and waits for it. A watchdog arms only while
// bytes are expected to flow; callers stop it before a commit that may take
// a registry minutes to verify.
func watch(cfg watchdogConfig, moved *atomic.Int64, cut func(error)) (stop func()) {
	if cfg.off() {
		return func() {}
	}
	period := cfg.lowTime
	if cfg.stall > 0 && (cfg.lowLimit < 0 || cfg.stall < period) {
		period = cfg.stall
	}
	tick := max(period/8, time.Millisecond)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(tick)
		defer t.Stop()
		start := time.Now()
		last, lastChange := moved.Load(), start
		// samples keeps (time, bytes) pairs covering the low-speed window.
		type sample struct {
			at time.Time
			n  int64
		}
		samples := []sample{{start, last}}
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				n := moved.Load()
				if n != last {
					last, lastChange = n, now
				}
				if cfg.stall > 0 && now.Sub(lastChange) >= cfg.stall {
					cut(retrypolicy.ErrStalled)
					return
				}
				if cfg.lowLimit < 0 {
					continue
				}
				samples = append(samples, sample{now, n})
				// Drop samples older than the window, keeping the one
				// that spans its start.
				for len(samples) > 2 && now.Sub(samples[1].at) >= cfg.lowTime {
					samples = samples[1:]
				}
				oldest := samples[0]
				if span := now.Sub(oldest.at); span >= cfg.lowTime {
					rate := float64(n-oldest.n) / span.Seconds()
					if rate < float64(cfg.lowLimit) {
						cut(retrypolicy.ErrTooSlow)
						return
					}
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

package transfer

import (
	"sync"
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

// A clock tells a watchdog how much time one side of a pipe has spent
// waiting. A source that is only slow because its consumer is slow (a
// download feeding an upload that stalls) has not stalled: its clock only
// runs while a Read of it is blocked.
type clock func() time.Duration

// wallClock runs all the time.
func wallClock() clock {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// activeClock runs while a Read is in progress.
type activeClock struct {
	total atomic.Int64 // nanoseconds spent in finished reads
	since atomic.Int64 // UnixNano when the read in progress began; 0: none
}

func (c *activeClock) enter() { c.since.Store(time.Now().UnixNano()) }

func (c *activeClock) leave() {
	if s := c.since.Swap(0); s != 0 {
		c.total.Add(time.Now().UnixNano() - s)
	}
}

func (c *activeClock) elapsed() time.Duration {
	t := c.total.Load()
	if s := c.since.Load(); s != 0 {
		t += time.Now().UnixNano() - s
	}
	return time.Duration(t)
}

// idleClock runs while a is not running: the time a consumer of a spends
// elsewhere (writing to the network).
func idleClock(a *activeClock) clock {
	wall := wallClock()
	return func() time.Duration { return wall() - a.elapsed() }
}

// watch checks moved every tick and calls cut with ErrStalled when it did
// not change for the stall timeout, or with ErrTooSlow when it grew by less
// than lowLimit x lowTime over the last lowTime, both measured on clk. It
// returns a stop function that ends its goroutine and waits for it.
// Callers arm a watchdog only while bytes are expected to flow: not during
// a commit that may take a registry minutes to verify.
func watch(cfg watchdogConfig, moved *atomic.Int64, clk clock, cut func(error)) (stop func()) {
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
		type sample struct {
			at time.Duration
			n  int64
		}
		last, lastChange := moved.Load(), clk()
		samples := []sample{{lastChange, last}}
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			now, n := clk(), moved.Load()
			if n != last {
				last, lastChange = n, now
			}
			if cfg.stall > 0 && now-lastChange >= cfg.stall {
				cut(retrypolicy.ErrStalled)
				return
			}
			if cfg.lowLimit < 0 {
				continue
			}
			samples = append(samples, sample{now, n})
			// Keep the newest sample that is at least lowTime old.
			for len(samples) > 2 && now-samples[1].at >= cfg.lowTime {
				samples = samples[1:]
			}
			oldest := samples[0]
			if span := now - oldest.at; span >= cfg.lowTime {
				if rate := float64(n-oldest.n) / span.Seconds(); rate < float64(cfg.lowLimit) {
					cut(retrypolicy.ErrTooSlow)
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-finished
	}
}

// patient is the watchdog of the consumer side of a pipe whose source has
// its own: twice as patient on stalls, so that a stalled source is healed
// before its consumer gives up.
func (w watchdogConfig) patient() watchdogConfig {
	if w.stall > 0 {
		w.stall *= 2
	}
	return w
}

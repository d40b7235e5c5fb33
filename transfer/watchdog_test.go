package transfer

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

// manualClock is advanced by the test; the watchdog's ticker still runs
// on real time, but only this clock decides.
type manualClock struct{ t atomic.Int64 }

func (c *manualClock) now() time.Duration  { return time.Duration(c.t.Load()) }
func (c *manualClock) add(d time.Duration) { c.t.Add(int64(d)) }

func waitCut(t *testing.T, cut <-chan error) error {
	t.Helper()
	select {
	case err := <-cut:
		return err
	case <-time.After(5 * time.Second):
		return nil
	}
}

func TestWatchStall(t *testing.T) {
	var moved atomic.Int64
	clk := &manualClock{}
	cut := make(chan error, 1)
	// The ticker runs every stall/8 of real time; the clock decides.
	stop := watch(watchdogConfig{stall: 80 * time.Millisecond, lowLimit: -1}, &moved, clk.now, func(err error) { cut <- err })
	defer stop()
	clk.add(79 * time.Millisecond)
	moved.Add(1) // progress just in time: the period starts again
	time.Sleep(40 * time.Millisecond)
	clk.add(79 * time.Millisecond)
	select {
	case err := <-cut:
		t.Fatalf("cut early: %v", err)
	case <-time.After(60 * time.Millisecond):
	}
	clk.add(2 * time.Millisecond)
	if err := waitCut(t, cut); !errors.Is(err, retrypolicy.ErrStalled) {
		t.Fatalf("cut = %v", err)
	}
}

func TestWatchLowSpeed(t *testing.T) {
	var moved atomic.Int64
	clk := &manualClock{}
	cut := make(chan error, 1)
	stop := watch(watchdogConfig{stall: -1, lowLimit: 1000, lowTime: 80 * time.Millisecond}, &moved, clk.now, func(err error) { cut <- err })
	defer stop()
	// 2000 B/s (16 bytes per 8 ms of clock) for a while: fine.
	for i := 0; i < 40; i++ {
		clk.add(8 * time.Millisecond)
		moved.Add(16)
		time.Sleep(2 * time.Millisecond)
	}
	select {
	case err := <-cut:
		t.Fatalf("cut a fast link: %v", err)
	default:
	}
	// Then a trickle: 125 B/s, which a zero-progress rule never catches.
	for i := 0; i < 100; i++ {
		clk.add(8 * time.Millisecond)
		moved.Add(1)
		time.Sleep(2 * time.Millisecond)
		select {
		case err := <-cut:
			if !errors.Is(err, retrypolicy.ErrTooSlow) {
				t.Fatalf("cut = %v", err)
			}
			return
		default:
		}
	}
	if err := waitCut(t, cut); !errors.Is(err, retrypolicy.ErrTooSlow) {
		t.Fatalf("trickle not cut: %v", err)
	}
}

func TestWatchOffAndStop(t *testing.T) {
	var moved atomic.Int64
	stop := watch(watchdogConfig{stall: -1, lowLimit: -1}, &moved, wallClock(), func(error) { t.Error("cut while off") })
	stop()
	// stop returns at once and ends the watchdog's goroutine (goleak in
	// TestMain), long before its hour is up.
	watch(watchdogConfig{stall: time.Hour, lowLimit: -1}, &moved, wallClock(), func(error) {})()
}

func TestActiveAndIdleClocks(t *testing.T) {
	var a activeClock
	idle := idleClock(&a)
	start := time.Now()
	a.enter()
	time.Sleep(30 * time.Millisecond)
	a.leave()
	time.Sleep(30 * time.Millisecond)
	// Active time excludes the last 30 ms, however slow the machine.
	if got, most := a.elapsed(), time.Since(start)-30*time.Millisecond; got < 25*time.Millisecond || got > most {
		t.Fatalf("active = %s, want between 25ms and %s", got, most)
	}
	if got := idle(); got < 25*time.Millisecond {
		t.Fatalf("idle = %s", got)
	}
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// These tests put Shopify's toxiproxy (in-process, see toxicLink) between
// sturdy and a real registry: TCP-level faults from a fault injector that
// is not ours, with its own semantics (per connection, headers counted,
// toxicity rolled per connection and direction). Each pull or push must
// finish, land byte-exact (re-hashed), go through the proxy only, and move
// a bounded number of bytes.

// toxiPull seeds a into the registry (directly, no toxics), runs setup
// (which adds toxics), pulls the artifact through the proxy into an OCI
// layout and checks what landed, byte for byte.
func toxiPull(t *testing.T, l *toxicLink, a *artifact, opts transfer.Options, setup func()) (progress.Summary, *events) {
	t.Helper()
	seed(t, l.reg, "toxi", a)
	l.reset()
	setup()
	ev := &events{}
	tr := progress.NewTracker()
	opts.Observer = progress.Multi(ev, tr, opts.Observer)
	dst := newLayout(t)
	start := time.Now()
	if _, err := transfer.Copy(context.Background(), l.repo(t, "toxi"), "v1", dst, "", opts); err != nil {
		t.Fatalf("pull through toxiproxy after %v: %v (retries %v)", time.Since(start), err, ev.reasons(progress.Retrying))
	}
	s := tr.Summary()
	t.Logf("pull took %v: wire %.3f x payload (client sockets %.3f x, registry blob GET bodies %.3f x), %d retries %v",
		time.Since(start).Round(time.Millisecond), s.Overhead(), ratio(l.wireDown.Load(), payload(a)),
		ratio(l.reg.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes, payload(a)), s.Retries, reasonCounts(ev))
	verifyStore(t, dst, a)
	l.assertViaProxy(t)
	return s, ev
}

// toxiPush runs setup (which adds toxics), pushes a through the proxy and
// checks what the registry holds by reading it back past the proxy,
// re-hashed.
func toxiPush(t *testing.T, l *toxicLink, a *artifact, opts transfer.Options, setup func()) (progress.Summary, registrytest.Stats, *events) {
	t.Helper()
	l.reset()
	setup()
	ev := &events{}
	tr := progress.NewTracker()
	opts.Observer = progress.Multi(ev, tr, opts.Observer)
	start := time.Now()
	if _, err := transfer.Copy(context.Background(), a.store, "v1", l.repo(t, "toxi"), "v1", opts); err != nil {
		t.Fatalf("push through toxiproxy after %v: %v (retries %v)", time.Since(start), err, ev.reasons(progress.Retrying))
	}
	s, st := tr.Summary(), l.reg.Stats()
	t.Logf("push took %v: wire %.3f x payload (client sockets %.3f x, registry PATCH bodies %.3f x), %d retries %v",
		time.Since(start).Round(time.Millisecond), s.Overhead(), ratio(l.wireUp.Load(), payload(a)),
		ratio(st.Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)), s.Retries, reasonCounts(ev))
	verifyStore(t, repo(t, l.reg, "toxi"), a)
	if d, err := repo(t, l.reg, "toxi").Resolve(context.Background(), "v1"); err != nil || d.Digest != a.root.Digest {
		t.Fatalf("tag: %v", err)
	}
	l.assertViaProxy(t)
	return s, st, ev
}

func (l *toxicLink) assertViaProxy(t *testing.T) {
	t.Helper()
	if other := l.requestsNotViaProxy(); len(other) > 0 {
		t.Fatalf("requests that did not go through the proxy %s: %v", l.host, other)
	}
	if l.requestsViaProxy() == 0 {
		t.Fatal("no request went through the proxy")
	}
}

func reasonCounts(ev *events) map[string]int {
	out := map[string]int{}
	for _, r := range ev.reasons(progress.Retrying) {
		out[r]++
	}
	return out
}

// limit_data closes each connection after 2 MiB downstream, headers
// included and counted across the requests a keep-alive connection
// carries. Every range (or the one stream) continues from its last byte on
// a new connection: what crossed the client's sockets is the payload about
// once. The registry's own count is higher and not a bound: toxiproxy
// reads what the registry writes as fast as it comes, and what it and the
// kernel buffers held when the toxic closed the connection is dropped
// before the client.
func TestToxiPullLimitData(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conns int
	}{{"default", 0}, {"one connection", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newToxicLink(t)
			a := newArtifact(t, 16*MiB)
			s, ev := toxiPull(t, l, a, transfer.Options{Retry: fast(4), PullConnections: tc.conns}, func() {
				l.toxic(t, "limit_data", "downstream", 1, map[string]any{"bytes": 2 * MiB})
			})
			// 8 cuts, less those that landed between two requests of a
			// keep-alive connection (net/http sends an idempotent request
			// again by itself when a reused connection was closed before it).
			if n := len(ev.of(progress.Resumed)); n < 4 {
				t.Fatalf("%d resumes: the toxic did not cut every 2 MiB", n)
			}
			if r := s.Overhead(); r > 1.1 {
				t.Fatalf("wire / payload = %.3f, want <= 1.1", r)
			}
			if r := ratio(l.wireDown.Load(), payload(a)); r > 1.1 {
				t.Fatalf("client sockets received %.3f x payload, want <= 1.1", r)
			}
		})
	}
}

// limit_data closes each connection after 2 MiB upstream (mid-PATCH): the
// upload continues from the offset the registry holds, in the same
// session. What the client handed its sockets is not bounded here: each
// cut loses what toxiproxy and the loopback buffers held (several MiB),
// far more than a real path's bytes in flight.
func TestToxiPushLimitData(t *testing.T) {
	l := newToxicLink(t)
	a := newArtifact(t, 16*MiB)
	_, st, ev := toxiPush(t, l, a, transfer.Options{Retry: fast(4)}, func() {
		l.toxic(t, "limit_data", "upstream", 1, map[string]any{"bytes": 2 * MiB})
	})
	if n := len(ev.of(progress.Resumed)); n < 4 {
		t.Fatalf("%d resumes: the toxic did not cut every 2 MiB", n)
	}
	if r := ratio(st.Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)); r > 1.2 {
		t.Fatalf("the registry received %.3f x payload in PATCH bodies, want <= 1.2", r)
	}
	if n := st.Kinds[registrytest.UploadPost].Requests; n > 4 {
		t.Fatalf("%d upload sessions opened: the upload restarted instead of resuming", n)
	}
}

// A proxy that closes every connection after 400 KB, less than
// MinProgress (1 MiB): no attempt progresses by itself, but a few together
// do, so with the default MaxAttempts and MinProgress the pull (each range
// on its own) and the push finish, reconnecting at once. Before progress
// was counted over attempts, both failed after 6 connections.
func TestToxiLimitDataBelowMinProgress(t *testing.T) {
	const limit = 400_000
	retry := retrypolicy.Config{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	for _, tc := range []struct {
		name  string
		conns int
		size  int
	}{{"pull ranged", 0, 16 * MiB}, {"pull one connection", 1, 8 * MiB}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newToxicLink(t)
			a := newArtifact(t, tc.size)
			s, ev := toxiPull(t, l, a, transfer.Options{Retry: retry, PullConnections: tc.conns}, func() {
				l.toxic(t, "limit_data", "downstream", 1, map[string]any{"bytes": limit})
			})
			if n := len(ev.of(progress.Resumed)); n < tc.size/limit/2 {
				t.Fatalf("%d resumes: the toxic did not cut every %d bytes", n, limit)
			}
			if r := s.Overhead(); r > 1.1 {
				t.Fatalf("wire / payload = %.3f, want <= 1.1", r)
			}
		})
	}
	t.Run("push", func(t *testing.T) {
		l := newToxicLink(t)
		a := newArtifact(t, 4*MiB)
		_, st, ev := toxiPush(t, l, a, transfer.Options{Retry: retry}, func() {
			l.toxic(t, "limit_data", "upstream", 1, map[string]any{"bytes": limit})
		})
		if n := len(ev.of(progress.Resumed)); n < 5 {
			t.Fatalf("%d resumes: the toxic did not cut every %d bytes", n, limit)
		}
		if n := st.Kinds[registrytest.UploadPost].Requests; n > 4 {
			t.Fatalf("%d upload sessions opened: the upload restarted instead of resuming", n)
		}
	})
}

// reset_peer in toxiproxy v2.5.0 passes nothing: the first chunk a
// connection carries in the toxic's direction is swallowed and the
// connection reset (RST) after the timeout. Downstream, at a toxicity
// below 1, some connections die that way after their request reached the
// registry: the response is lost, for a PATCH or the final PUT too.
// Whether a connection gets the toxic is rolled per connection, and a push
// opens few (keep-alive), so each is repeated until a reset happened.
func TestToxiResetPeer(t *testing.T) {
	// Every new connection is reset with probability 0.5, so a request
	// fails 8 attempts in a row once in 256 (a manifest HEAD did, on
	// a CI-like run): 16 attempts make that once in 65536.
	const tries, resetPeerAttempts = 6, 16
	t.Run("pull", func(t *testing.T) {
		untilHit(t, tries, func() bool {
			l := newToxicLink(t)
			a := newArtifact(t, 16*MiB)
			_, ev := toxiPull(t, l, a, transfer.Options{Retry: fast(resetPeerAttempts)}, func() {
				l.toxic(t, "reset_peer", "downstream", 0.5, map[string]any{"timeout": 200})
			})
			return len(ev.of(progress.Retrying)) > 0
		})
	})
	t.Run("push", func(t *testing.T) {
		untilHit(t, tries, func() bool {
			l := newToxicLink(t)
			a := newArtifact(t, 16*MiB)
			_, st, ev := toxiPush(t, l, a, transfer.Options{Retry: fast(resetPeerAttempts)}, func() {
				l.toxic(t, "reset_peer", "downstream", 0.5, map[string]any{"timeout": 200})
			})
			if r := ratio(st.Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)); r > 1.2 {
				t.Fatalf("the registry received %.3f x payload in PATCH bodies, want <= 1.2", r)
			}
			return len(ev.of(progress.Retrying)) > 0
		})
	})
}

// untilHit runs a transfer whose toxic is rolled per connection until the
// toxic hit (run returns true), at most tries times: a transfer the toxic
// missed proves nothing, and fails no assertion either.
func untilHit(t *testing.T, tries int, run func() bool) {
	t.Helper()
	for try := 1; !run(); try++ {
		if try == tries {
			t.Fatalf("the toxic hit no connection in %d transfers", tries)
		}
		t.Logf("try %d: the toxic hit no connection; again", try)
	}
}

// A flapping link: reset_peer is switched on for 150 ms every 400 ms
// while a bandwidth cap keeps the transfer going across several flaps, so
// each connection moves some bytes, then is reset (RST) mid-body, open
// connections and new ones alike.
func TestToxiResetPeerFlapping(t *testing.T) {
	// flap switches the toxic until the test's cleanup (which runs before
	// the proxy stops).
	flap := func(t *testing.T, l *toxicLink, stream string) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		t.Cleanup(func() { cancel(); wg.Wait() })
		toxic := fmt.Sprintf(`{"name":"flap","type":"reset_peer","stream":%q,"toxicity":1,"attributes":{"timeout":50}}`, stream)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(250 * time.Millisecond):
				}
				if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
					t.Errorf("add the toxic: %v", err)
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(150 * time.Millisecond):
				}
				if err := l.proxy.Toxics.RemoveToxic(context.Background(), "flap"); err != nil {
					t.Errorf("remove the toxic: %v", err)
					return
				}
			}
		}()
	}
	t.Run("pull", func(t *testing.T) {
		l := newToxicLink(t)
		a := newArtifact(t, 16*MiB)
		s, ev := toxiPull(t, l, a, transfer.Options{Retry: fast(8)}, func() {
			// KB/s per connection: more than Retry.MinProgress (1 MiB) per
			// connection between two flaps, so that every range progresses.
			l.toxic(t, "bandwidth", "downstream", 1, map[string]any{"rate": 16 << 10})
			flap(t, l, "downstream")
		})
		if len(ev.of(progress.Resumed)) == 0 {
			t.Fatal("nothing was resumed: the link never flapped mid-body")
		}
		if r := s.Overhead(); r > 1.1 {
			t.Fatalf("wire / payload = %.3f, want <= 1.1", r)
		}
	})
	t.Run("push", func(t *testing.T) {
		l := newToxicLink(t)
		a := newArtifact(t, 16*MiB)
		_, st, ev := toxiPush(t, l, a, transfer.Options{Retry: fast(8)}, func() {
			l.toxic(t, "bandwidth", "upstream", 1, map[string]any{"rate": 32 << 10})
			flap(t, l, "upstream")
		})
		if len(ev.of(progress.Resumed)) == 0 {
			t.Fatal("nothing was resumed: the link never flapped mid-body")
		}
		if r := ratio(st.Kinds[registrytest.UploadPatch].RequestBodyBytes, payload(a)); r > 1.2 {
			t.Fatalf("the registry received %.3f x payload in PATCH bodies, want <= 1.2", r)
		}
	})
}

// timeout 0 black-holes a connection for ever, here about one in three:
// downstream, the registry's answers vanish; upstream, the requests (an
// upload's PATCH body included) go nowhere and nothing comes back.
// sturdy's watchdog cuts each after StallTimeout, time to headers
// included, and the request goes on over another connection. Whether a
// connection is black-holed is rolled per connection: see untilHit.
func TestToxiBlackHole(t *testing.T) {
	const stall = 750 * time.Millisecond
	opts := transfer.Options{Retry: fast(8), StallTimeout: stall}
	// At most a few stalls in a row per request, the transfer itself, and
	// slack for -race on two cores.
	bound := func(t *testing.T, start time.Time, ev *events) int {
		stalled := reasonCounts(ev)["stalled"]
		if took := time.Since(start); took > time.Duration(stalled+4)*stall+5*time.Second {
			t.Fatalf("took %v with %d stalls", took, stalled)
		}
		return stalled
	}
	// Each try rolls once per connection: a pull in 2 MiB ranges opens
	// about 9, a push of two layers 3 or 4 (0.7^9 and 0.7^3.5 that none is
	// hit).
	t.Run("pull", func(t *testing.T) {
		untilHit(t, 6, func() bool {
			l := newToxicLink(t)
			a := newArtifact(t, 16*MiB)
			start := time.Now()
			opts := opts
			opts.PullRangeSize = 2 * MiB
			_, ev := toxiPull(t, l, a, opts, func() {
				l.toxic(t, "timeout", "downstream", 0.3, map[string]any{"timeout": 0})
			})
			return bound(t, start, ev) > 0
		})
	})
	t.Run("push", func(t *testing.T) {
		untilHit(t, 12, func() bool {
			l := newToxicLink(t)
			a := newArtifact(t, 8*MiB, 8*MiB)
			start := time.Now()
			_, _, ev := toxiPush(t, l, a, opts, func() {
				l.toxic(t, "timeout", "upstream", 0.3, map[string]any{"timeout": 0})
			})
			return bound(t, start, ev) > 0
		})
	})
}

// slicer cuts what crosses the proxy into small TCP segments, delayed,
// and latency adds jitter: the HTTP parsers on both sides see headers and
// bodies in pieces. A small artifact in tiny segments (every status line
// and header split), then a large one in small segments.
func TestToxiSlicer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sizes     []int
		avg, vary int
		delayUS   int
	}{
		{"tiny segments", []int{64 << 10, 3000}, 7, 6, 0},
		{"small segments", []int{16 * MiB}, 1500, 1400, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setup := func(l *toxicLink) func() {
				return func() {
					for _, stream := range []string{"downstream", "upstream"} {
						l.toxic(t, "slicer", stream, 1, map[string]any{"average_size": tc.avg, "size_variation": tc.vary, "delay": tc.delayUS})
						l.toxic(t, "latency", stream, 1, map[string]any{"latency": 2, "jitter": 2})
					}
				}
			}
			t.Run("pull", func(t *testing.T) {
				l := newToxicLink(t)
				toxiPull(t, l, newArtifact(t, tc.sizes...), transfer.Options{Retry: fast(2)}, setup(l))
			})
			t.Run("push", func(t *testing.T) {
				l := newToxicLink(t)
				toxiPush(t, l, newArtifact(t, tc.sizes...), transfer.Options{Retry: fast(2)}, setup(l))
			})
		})
	}
}

// limit_data then slow_close: each connection is cut after 2 MiB, and
// then held open, silent, for 10 s before it closes: a half-dead
// connection that only the watchdog ends.
func TestToxiSlowClose(t *testing.T) {
	l := newToxicLink(t)
	a := newArtifact(t, 16*MiB)
	start := time.Now()
	_, ev := toxiPull(t, l, a, transfer.Options{Retry: fast(4), StallTimeout: 500 * time.Millisecond}, func() {
		l.toxic(t, "limit_data", "downstream", 1, map[string]any{"bytes": 2 * MiB})
		name := l.toxic(t, "slow_close", "downstream", 1, map[string]any{"delay": 10000})
		// Removing the toxic interrupts its waits: the links it holds
		// open close now, not 10 s after the test (goleak would see them).
		t.Cleanup(func() {
			if err := l.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
				t.Errorf("remove %s: %v", name, err)
			}
		})
	})
	if reasonCounts(ev)["stalled"] == 0 {
		t.Fatalf("no stall was reported: %v", reasonCounts(ev))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("took %v: the half-closed connections were waited out", took)
	}
}

// limit_data at a few hundred bytes on half the connections cuts the
// first response of each in the middle of its status line or headers.
func TestToxiCutMidHeaders(t *testing.T) {
	for _, bytes := range []int{20, 150} {
		l := newToxicLink(t)
		a := newArtifact(t, 16*MiB)
		toxiPull(t, l, a, transfer.Options{Retry: fast(10)}, func() {
			l.toxic(t, "limit_data", "downstream", 0.5, map[string]any{"bytes": bytes})
		})
		l2 := newToxicLink(t)
		toxiPush(t, l2, a, transfer.Options{Retry: fast(10)}, func() {
			l2.toxic(t, "limit_data", "downstream", 0.5, map[string]any{"bytes": bytes})
		})
	}
}

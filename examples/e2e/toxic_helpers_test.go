package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sturdyoci/sturdy/examples/registrytest"
)

// toxicLink is a real registry (distribution, in-process) behind Shopify's
// toxiproxy, also in-process: faults at the TCP level, between the
// client's connections and the registry's, by a fault injector that is not
// ours. Toxics act per TCP connection (a keep-alive connection carries
// many requests) and count headers as bytes.
//
// Two byte counts are at hand: the registry's (what its handlers wrote or
// read) and the client's sockets' (wireDown, wireUp: what crossed the
// client's end of the connections, headers included). On a cut
// connection they differ by what toxiproxy and the kernel buffers held:
// toxiproxy reads from the registry as fast as the registry writes, and
// what it held when a toxic closed the connection never reaches the
// client. What a pull cost is the client's count.
type toxicLink struct {
	reg   *registrytest.Registry
	proxy *toxiproxy.Proxy
	host  string // the proxy's 127.0.0.1:port
	tr    *http.Transport

	wireDown, wireUp atomic.Int64 // at the client's sockets

	mu    sync.Mutex
	hosts map[string]int // requests the client sent, by URL host
}

var silenceZerolog sync.Once

// newToxicLink starts a registry and a toxiproxy proxy in front of it on
// loopback, stopped in t.Cleanup (before the registry closes).
func newToxicLink(t testing.TB, opts ...registrytest.Option) *toxicLink {
	t.Helper()
	// toxiproxy's bandwidth toxic logs through zerolog's global logger.
	silenceZerolog.Do(func() { zlog.Logger = zerolog.Nop() })
	reg := registrytest.New(t, opts...)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", reg.Host())
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	// Start returns once the listener is up and has put its address in
	// Listen (it was "127.0.0.1:0").
	l := &toxicLink{reg: reg, proxy: p, host: p.Listen, hosts: map[string]int{}}
	// The registry's own client settings (HTTP/1.1, no proxy, a large idle
	// pool, no retries), dialing through a byte counter.
	l.tr = reg.Client().Transport.(*http.Transport).Clone()
	dial := (&net.Dialer{}).DialContext
	l.tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, l: l}, nil
	}
	t.Cleanup(l.tr.CloseIdleConnections) // runs before the proxy stops
	return l
}

// reset zeroes the registry's and the client's byte counters.
func (l *toxicLink) reset() {
	l.reg.ResetStats()
	l.wireDown.Store(0)
	l.wireUp.Store(0)
}

// toxic adds a toxic named after its type and stream to every connection
// opened from now on (and to those open); attrs are its attributes as in
// toxiproxy's HTTP API. toxicity is the probability that a connection
// (one direction of it) gets the toxic.
func (l *toxicLink) toxic(t testing.TB, typ, stream string, toxicity float32, attrs map[string]any) string {
	t.Helper()
	name := typ + "_" + stream
	b, err := json.Marshal(map[string]any{"name": name, "type": typ, "stream": stream, "toxicity": toxicity, "attributes": attrs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.proxy.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
		t.Fatalf("toxic %s: %v", name, err)
	}
	return name
}

// repo returns a repository on the registry addressed at the proxy, with
// a client built as registrytest's Repository builds it (an *auth.Client
// over a plain http.Client that does not retry), recording the host of
// every request.
func (l *toxicLink) repo(t testing.TB, name string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(l.host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	r.Client = &auth.Client{Client: &http.Client{Transport: hostRecorder{l}}, Cache: auth.NewCache()}
	return r
}

// requestsNotViaProxy returns the requests the client sent to any host
// but the proxy's: distribution builds upload Locations from the Host
// header, so every request, PATCH and PUT included, must go through it.
func (l *toxicLink) requestsNotViaProxy() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for h, n := range l.hosts {
		if h != l.host {
			out[h] = n
		}
	}
	return out
}

func (l *toxicLink) requestsViaProxy() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[l.host]
}

type hostRecorder struct{ l *toxicLink }

func (h hostRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	h.l.mu.Lock()
	h.l.hosts[req.URL.Host]++
	h.l.mu.Unlock()
	return h.l.tr.RoundTrip(req)
}

type countingConn struct {
	net.Conn
	l *toxicLink
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.wireDown.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.l.wireUp.Add(int64(n))
	return n, err
}

// toxiproxyLeaks returns goleak options for goroutines toxiproxy v2.5.0
// leaves behind by design: when a toxic ends a connection (limit_data,
// reset_peer, ...) it closes its stub's output and returns, but the
// link's pump (ToxicLink.read, in stream.ChanWriter.Write) and the stubs
// before it in the chain (ToxicStub.Run) stay blocked for ever sending on
// channels nobody reads any more: the chunk channels have no cancellation,
// and Proxy.Stop closes the sockets, not the channels. Only goroutines
// inside those two toxiproxy functions are ignored; anything of sturdy's
// is still reported.
func toxiproxyLeaks() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
	}
}

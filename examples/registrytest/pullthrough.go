package registrytest

import (
	"errors"
	"net/http"
	"time"

	"github.com/distribution/distribution/v3/configuration"
)

// PullThroughTTL is how long a pull-through cache keeps what it fetched
// (distribution's proxy.ttl): long enough that nothing expires during a
// test. Distribution's expiry scheduler runs with it and Close stops it.
const PullThroughTTL = 24 * time.Hour

// WithPullThrough makes the registry a pull-through cache of origin:
// distribution's own proxy mode (proxy.remoteurl), which serves a blob or
// manifest it lacks from origin while storing it, and from its storage
// after that. It is read-only: pushes are refused.
//
// The cache fetches from origin's real listener, so origin's faults and
// counters see its requests, and it has the same middleware of its own as
// any registry. Only Distribution can be a cache (Start fails with GGCR),
// and origin must serve plain HTTP: distribution fetches through
// http.DefaultTransport, which does not trust origin's self-signed
// certificate. Origin's credentials (WithBasicAuth, WithTokenAuth) are
// given to distribution, which logs in by itself. origin must be running
// when the cache starts (distribution asks it for its auth challenge; if
// that request fails, say under a DropResponse fault, Start fails and
// distribution leaks its expiry scheduler's goroutine); either may be
// closed first.
func WithPullThrough(origin *Registry) Option { return func(c *config) { c.origin = origin } }

// Origin returns the registry this one is a pull-through cache of, nil if it
// is not one.
func (r *Registry) Origin() *Registry { return r.cfg.origin }

// pullThrough checks the pull-through settings and returns distribution's
// proxy configuration, nil when the registry is not a cache.
func (c *config) pullThrough() (*configuration.Proxy, error) {
	o := c.origin
	if o == nil {
		return nil, nil
	}
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	switch {
	case closed:
		// Distribution would start its expiry scheduler, fail to reach the
		// origin and panic, leaving the scheduler's goroutine behind.
		return nil, errors.New("WithPullThrough: the origin is closed")
	case c.impl != Distribution:
		return nil, errors.New("WithPullThrough: only the Distribution implementation can be a pull-through cache")
	case o.cfg.tls:
		return nil, errors.New("WithPullThrough: the origin must serve plain HTTP (distribution's proxy fetches through http.DefaultTransport, which does not trust its certificate)")
	}
	ttl := PullThroughTTL
	p := &configuration.Proxy{RemoteURL: o.URL(), TTL: &ttl}
	if o.auth != nil {
		p.Username, p.Password = o.auth.user, o.auth.pass
	}
	return p, nil
}

// closeOriginConns drops the idle connections distribution's proxy keeps to
// the origin. It fetches through http.DefaultTransport and http.Get and
// cannot be given a transport of its own, so the whole process's idle
// connections on it go; they would otherwise linger until the origin
// closes them.
func closeOriginConns() {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

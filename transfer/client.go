package transfer

import (
	"net/http"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

// NewClient returns an oras-go auth client with no retrying transport
// underneath, so that sturdy's per-blob loop is the only retry layer (see
// "One retry layer" in the package doc). cred may be nil for anonymous
// access; base may be nil for http.DefaultClient.
func NewClient(base *http.Client, cred auth.CredentialFunc) *auth.Client {
	if base == nil {
		base = http.DefaultClient
	}
	return &auth.Client{Client: base, Cache: auth.NewCache(), Credential: cred}
}

// registryClient is the client of every request sturdy sends to a
// registry: it watches the request for silence (watchRequest) and notes
// Retry-After in the request's slot.
type registryClient struct {
	remote.Client
	stall time.Duration
}

func (c registryClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := watchRequest(c.Client, req, c.stall)
	if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return resp, err
	}
	if s, ok := req.Context().Value(retryAfterKey{}).(*retryAfterSlot); ok {
		if d, ok := retrypolicy.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			s.wait.Store(int64(d))
		}
	}
	return resp, err
}

// rewire returns a repository that reads and writes the same repository
// as r, with r's settings, through a registryClient and, unless
// opts.KeepInnerRetries, without oras-go's retrying transport underneath.
// The caller's repository is not modified.
func rewire(r *remote.Repository, opts Options) *remote.Repository {
	client := r.Client
	if client == nil {
		client = auth.DefaultClient
	}
	if rc, ok := client.(registryClient); ok {
		// Already rewired (by a Wrap): rewire again under these opts.
		client = rc.Client
	}
	if !opts.KeepInnerRetries {
		client = withPooledTransport(withoutInnerRetries(client))
	}
	return &remote.Repository{
		Client:               registryClient{client, opts.watchdogConfig().stall},
		Reference:            r.Reference,
		PlainHTTP:            r.PlainHTTP,
		ManifestMediaTypes:   r.ManifestMediaTypes,
		TagListPageSize:      r.TagListPageSize,
		ReferrerListPageSize: r.ReferrerListPageSize,
		TagListMaxPages:      r.TagListMaxPages,
		ReferrerListMaxPages: r.ReferrerListMaxPages,
		MaxMetadataBytes:     r.MaxMetadataBytes,
		SkipReferrersGC:      r.SkipReferrersGC,
		HandleWarning:        r.HandleWarning,
	}
}

// withoutInnerRetries returns c without oras-go's retry.Transport under
// its auth client (auth.DefaultClient has one): under sturdy's per-blob
// loop it would multiply attempts (6 x 6) and clamp Retry-After to 3 s.
// Clients of other shapes are returned as they are.
// pooledTransport is http.DefaultTransport with an idle pool as large as
// the ranged connections a copy opens: the default keeps two idle
// connections per host, so the other ranges of a parallel pull would
// close theirs after every range and open new ones (a TLS handshake per
// range on a real link).
var pooledTransport = sync.OnceValue(func() http.RoundTripper {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, 4*DefaultMaxPullConnections)
	return t
})

// withPooledTransport gives a client that would use http.DefaultTransport
// the pooled one; a transport of the caller's own is left alone.
func withPooledTransport(c remote.Client) remote.Client {
	ac, ok := c.(*auth.Client)
	if !ok {
		return c
	}
	hc := http.Client{}
	if ac.Client != nil {
		hc = *ac.Client
	}
	if hc.Transport != nil && hc.Transport != http.DefaultTransport {
		return c
	}
	hc.Transport = pooledTransport()
	pooled := *ac
	pooled.Client = &hc
	return &pooled
}

func withoutInnerRetries(c remote.Client) remote.Client {
	ac, ok := c.(*auth.Client)
	if !ok || ac.Client == nil {
		return c
	}
	rt, ok := ac.Client.Transport.(*retry.Transport)
	if !ok {
		return c
	}
	hc := *ac.Client
	hc.Transport = rt.Base
	if hc.Transport == nil {
		hc.Transport = http.DefaultTransport
	}
	stripped := *ac
	stripped.Client = &hc
	return &stripped
}

// rewireTarget applies rewire to a registry target and returns
// anything else unchanged.
func rewireTarget[T any](t T, opts Options) T {
	inner := unwrapTarget(t)
	switch u := inner.(type) {
	case *remote.Repository:
		if o, ok := any(rewire(u, opts)).(T); ok {
			return o
		}
	case *URLSource:
		if o, ok := any(u.watched(opts)).(T); ok {
			return o
		}
	}
	// A Wrap's target, so that one retry loop runs, not two.
	if o, ok := inner.(T); ok {
		return o
	}
	return t
}

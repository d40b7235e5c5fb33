package registrytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Registry is a real registry (CNCF distribution by default, see
// WithImplementation) served on 127.0.0.1 with a fault injecting middleware
// in front of it. All methods are safe for concurrent use.
type Registry struct {
	cfg       config
	dir       string // storage root
	removeDir bool   // dir was created by Start
	backend   backend
	handler   http.Handler // auth (if any) in front of the backend
	srv       *http.Server
	url       string
	host      string
	transport *http.Transport
	auth      *authenticator // nil without auth

	// closing is closed first thing in Close: every injected wait (stall,
	// trickle, delay, bandwidth pacing) selects on it, so no handler outlives Close.
	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	inflight  sync.WaitGroup

	// Bandwidth caps per connection in bytes per second, 0 = unlimited.
	capDown, capUp atomic.Int64
	// Bytes on the wire, all connections, headers and TLS included.
	wireDown, wireUp atomic.Int64

	mu     sync.Mutex // guards the fields below
	closed bool
	rules  []*Fault
	holds  map[*hold]struct{}
	stats  statsState
	// lingering counts handlers whose client a realistic cut has reset
	// and that still read their in-flight bytes; settled is closed
	// whenever it is zero.
	lingering int
	settled   chan struct{}
}

type config struct {
	tls            bool
	dir            string
	basicUser      string
	basicPass      string
	tokenUser      string
	tokenPass      string
	tokenTTL       time.Duration
	token          bool
	basic          bool
	capDown, capUp int64
	impl           Implementation
	realistic      bool
	inFlight       int64
	cutLag         time.Duration
	origin         *Registry // WithPullThrough
}

// Option configures a Registry at start.
type Option func(*config)

// WithTLS serves HTTPS with a self-signed certificate for 127.0.0.1, trusted
// by Client and Repository.
func WithTLS() Option { return func(c *config) { c.tls = true } }

// WithStorageDir keeps the registry's blobs in dir instead of a fresh
// temporary directory; dir is not removed on Close.
func WithStorageDir(dir string) Option { return func(c *config) { c.dir = dir } }

// WithBandwidth caps every connection from the start: download is what the
// registry sends, upload what it receives, in bytes per second (0 = no cap).
// See SetBandwidth.
func WithBandwidth(download, upload int64) Option {
	return func(c *config) { c.capDown, c.capUp = download, upload }
}

// WithTokenAuth puts a minimal Docker/OCI bearer token service in front of
// the registry: /v2/ requests need a token from GET or POST /token (Basic
// credentials or the OAuth2 password grant), and tokens expire after ttl so
// expiry in the middle of a transfer can be tested. Scopes are announced but
// not enforced: any valid token may pull and push everything.
func WithTokenAuth(user, pass string, ttl time.Duration) Option {
	return func(c *config) { c.token, c.tokenUser, c.tokenPass, c.tokenTTL = true, user, pass, ttl }
}

// WithBasicAuth makes /v2/ requests require HTTP Basic credentials.
func WithBasicAuth(user, pass string) Option {
	return func(c *config) { c.basic, c.basicUser, c.basicPass = true, user, pass }
}

// New starts a registry for the test and closes it in t.Cleanup.
// It stops the test with t.Fatal if the registry cannot start.
func New(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	r, err := Start(opts...)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("registrytest: %v", err)
		}
	})
	return r
}

// silenceLogs points the global logrus logger, which distribution logs
// through (it offers no per-instance logger), at io.Discard.
var silenceLogs sync.Once

// Start starts a registry for a main program; the caller must Close it.
func Start(opts ...Option) (_ *Registry, err error) {
	silenceLogs.Do(func() { logrus.SetOutput(io.Discard) })

	r := &Registry{closing: make(chan struct{}), holds: map[*hold]struct{}{}, settled: make(chan struct{})}
	close(r.settled)
	for _, o := range opts {
		o(&r.cfg)
	}
	if r.cfg.token && r.cfg.basic {
		return nil, errors.New("WithTokenAuth and WithBasicAuth are exclusive")
	}
	if r.cfg.impl != Distribution && r.cfg.impl != GGCR {
		return nil, fmt.Errorf("unknown implementation %v", r.cfg.impl)
	}
	proxy, err := r.cfg.pullThrough()
	if err != nil {
		return nil, err
	}
	r.capDown.Store(r.cfg.capDown)
	r.capUp.Store(r.cfg.capUp)
	r.stats.reset()

	r.dir = r.cfg.dir
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "registrytest-*"); err != nil {
			return nil, fmt.Errorf("create storage dir: %w", err)
		}
		r.removeDir = true
	}
	defer func() {
		if err != nil && r.removeDir {
			_ = os.RemoveAll(r.dir)
		}
	}()

	if r.backend, err = newBackend(r.cfg.impl, r.dir, proxy); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = r.backend.shutdown()
		return nil, fmt.Errorf("listen: %w", err)
	}
	r.host = ln.Addr().String()
	var served net.Listener = &wireListener{Listener: ln, reg: r}
	scheme := "http"
	tlsClient := &tls.Config{}
	if r.cfg.tls {
		cert, pool, err := selfSignedCert()
		if err != nil {
			_ = ln.Close()
			_ = r.backend.shutdown()
			return nil, err
		}
		tlsClient.RootCAs = pool
		// HTTP/1.1 only: faults act on whole connections, which would hit
		// every stream of a multiplexed HTTP/2 connection.
		served = tls.NewListener(served, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
		scheme = "https"
	}
	r.url = scheme + "://" + r.host

	switch {
	case r.cfg.token:
		r.auth = newTokenAuth(r.cfg.tokenUser, r.cfg.tokenPass, r.cfg.tokenTTL, r.url+"/token")
	case r.cfg.basic:
		r.auth = newBasicAuth(r.cfg.basicUser, r.cfg.basicPass)
	}
	r.handler = r.backend
	if r.auth != nil {
		r.handler = r.auth.wrap(r.backend)
	}

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	r.srv = &http.Server{
		Handler:           http.HandlerFunc(r.serveHTTP),
		ConnContext:       withConn,
		ReadHeaderTimeout: time.Minute,
		// net/http logs "superfluous WriteHeader" when a handler writes to a
		// connection a fault has broken; that is expected here.
		ErrorLog:  log.New(io.Discard, "", 0),
		Protocols: protocols,
	}
	r.transport = &http.Transport{
		Proxy:                 nil, // never route the loopback registry through an environment proxy
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsClient,
		Protocols:             protocols,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	go func() { _ = r.srv.Serve(served) }()
	return r, nil
}

// Close stops the server, releases held connections, waits for in-flight
// handlers and removes the storage directory it created. Calling it again
// returns the first result.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		close(r.closing)
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		errs := []error{}
		if err := r.srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close server: %w", err))
		}
		done := make(chan struct{})
		go func() { r.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			errs = append(errs, errors.New("handlers still running 10s after close"))
		}
		if err := r.backend.shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("shutdown registry: %w", err))
		}
		r.transport.CloseIdleConnections()
		if r.cfg.origin != nil {
			closeOriginConns()
		}
		if r.removeDir {
			if err := os.RemoveAll(r.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove storage: %w", err))
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// Host returns "127.0.0.1:port", the registry part of a reference.
func (r *Registry) Host() string { return r.host }

// URL returns "http://127.0.0.1:port" (https with WithTLS).
func (r *Registry) URL() string { return r.url }

// StorageDir returns the directory the registry stores blobs in
// (distribution's filesystem driver root, or ggcr's disk blob handler's).
func (r *Registry) StorageDir() string { return r.dir }

// Reference returns "host/repo:tag", or "host/repo@digest" when tagOrDigest
// is a digest.
func (r *Registry) Reference(repo, tagOrDigest string) string {
	if _, err := digest.Parse(tagOrDigest); err == nil {
		return r.host + "/" + repo + "@" + tagOrDigest
	}
	return r.host + "/" + repo + ":" + tagOrDigest
}

// Client returns an HTTP/1.1 client for the registry that trusts its TLS
// certificate and does not retry: the code under test owns retries. Clients
// share one transport, whose idle connections Close drops.
func (r *Registry) Client() *http.Client { return &http.Client{Transport: r.transport} }

// Repository returns an oras-go repository on the registry. Its Client is an
// *auth.Client over Client() -- deliberately not auth.DefaultClient, whose
// retrying transport would hide faults from the code under test -- with
// credentials wired when auth is enabled.
func (r *Registry) Repository(repo string) (*remote.Repository, error) {
	rr, err := remote.NewRepository(r.host + "/" + repo)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", repo, err)
	}
	rr.PlainHTTP = !r.cfg.tls
	client := &auth.Client{Client: r.Client(), Cache: auth.NewCache()}
	if r.auth != nil {
		client.Credential = auth.StaticCredential(r.host, auth.Credential{Username: r.auth.user, Password: r.auth.pass})
	}
	rr.Client = client
	return rr, nil
}

// SetBandwidth caps every connection, open or future, to download bytes per
// second from the registry and upload bytes per second to it (0 = no cap).
// The cap counts everything on the wire, headers and TLS included. Each
// connection has its own budget, so N parallel connections move N times
// as much.
func (r *Registry) SetBandwidth(download, upload int64) {
	r.capDown.Store(max(download, 0))
	r.capUp.Store(max(upload, 0))
}

// IgnoreLeaks returns goleak options for goroutines left behind by design
// by the given implementations (all of them if none is named):
// distribution's handlers.NewApp starts a go-events broadcaster for
// notifications that App.Shutdown does not stop (one per registry); ggcr
// starts none. For any implementation, net/http lingers on a connection
// whose request body it did not read.
func IgnoreLeaks(impls ...Implementation) []goleak.Option {
	if len(impls) == 0 {
		impls = Implementations()
	}
	opts := []goleak.Option{
		// net/http's server, after answering a request whose body it did
		// not read (a Respond fault on an upload), half-closes and lingers
		// 500 ms so the client reads the answer before the RST; the
		// goroutine ends by itself, after Close has returned.
		goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"),
	}
	if slices.Contains(impls, Distribution) {
		opts = append(opts, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
	}
	return opts
}

// sleep waits d, or less if the registry closes or ctx ends. It reports
// whether the full duration passed.
func (r *Registry) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	done := ctx.Done()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.closing:
		return false
	case <-done:
		return false
	}
}

// selfSignedCert makes a certificate for 127.0.0.1, ::1 and localhost, as
// httptest does, and the pool that trusts it.
func selfSignedCert() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{Organization: []string{"registrytest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("parse certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

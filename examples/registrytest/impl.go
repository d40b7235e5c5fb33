package registrytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // registers the "filesystem" driver
	ggcr "github.com/google/go-containerregistry/pkg/registry"
)

// Implementation names the registry code behind the fault middleware.
// Registries in the field differ in the corners of the protocol that
// resuming depends on, so a client that must survive them is tested
// against more than one; Capabilities says where they differ.
type Implementation int

const (
	// Distribution is CNCF distribution v3.1.2 (registry/handlers.App) on
	// its filesystem driver: the registry behind Harbor, GitLab and most
	// self-hosted installations. The default.
	Distribution Implementation = iota
	// GGCR is go-containerregistry v0.22.1's pkg/registry with its disk
	// blob handler: the registry many Go tools test against, and the
	// strictest about ranges and upload offsets.
	GGCR
)

// Implementations lists every implementation, for tests that run a table
// against each.
func Implementations() []Implementation { return []Implementation{Distribution, GGCR} }

func (i Implementation) String() string {
	switch i {
	case Distribution:
		return "distribution"
	case GGCR:
		return "ggcr"
	}
	return fmt.Sprintf("Implementation(%d)", int(i))
}

// WithImplementation picks the registry behind the middleware. Faults,
// counters, auth, TLS and bandwidth caps work the same on each.
func WithImplementation(impl Implementation) Option { return func(c *config) { c.impl = impl } }

// Capabilities are the protocol behaviours a resuming client depends on
// and registries disagree about. Each is pinned by a test against the real
// implementation, so an upgrade that changes one fails loudly.
type Capabilities struct {
	// OpenEndedRange: a blob GET with "Range: bytes=N-" gets a 206. ggcr
	// only parses the closed form "bytes=a-b" and answers 416.
	OpenEndedRange bool
	// ClosedRange: a blob GET with "Range: bytes=a-b" gets a 206.
	ClosedRange bool
	// UploadStatus: GET on an upload URL answers 204 with "Range: 0-N"
	// (distribution writes 0-0 for both 0 and 1 byte). ggcr answers 400:
	// a client cannot ask how much it holds.
	UploadStatus bool
	// UploadCancel: DELETE on an upload URL ends the session. ggcr
	// answers 400 and keeps the session.
	UploadCancel bool
	// LocationPerChunk: every PATCH answers a new Location, and one from
	// before the upload moved gets 416 (distribution signs the offset into
	// _state). ggcr's upload URL never changes.
	LocationPerChunk bool
	// LazySession: POST allocates nothing and answers "Range: 0-0"; the
	// first PATCH (or PUT) to any upload id creates the session, so no
	// upload is ever unknown (404) there. ggcr.
	LazySession bool
	// StrictPatchStart: a PATCH whose Content-Range does not start at the
	// bytes the session holds gets 416. Both.
	StrictPatchStart bool
	// PartialPatchKept: a PATCH whose body breaks keeps the bytes that
	// arrived, and the next PATCH must start after them. Both.
	PartialPatchKept bool
	// Mount: POST ?mount=&from= links a blob from another repository
	// (201). ggcr ignores it and starts a session (202).
	Mount bool
	// SharedBlobs: one blob store for all repositories; a blob pushed to
	// one is found (HEAD, GET) in any other. ggcr.
	SharedBlobs bool
	// SerialUploads: the registry reads one upload body at a time: while
	// a PATCH or PUT body is read (or stalled), every other upload request
	// with a body waits. ggcr holds one lock over all sessions.
	SerialUploads bool
}

// Impl returns the implementation the registry runs.
func (r *Registry) Impl() Implementation { return r.cfg.impl }

// Capabilities returns what the registry's implementation supports. A
// pull-through cache (WithPullThrough) takes no uploads: it keeps only the
// ranges, and serves those only for blobs it has cached.
func (r *Registry) Capabilities() Capabilities {
	c := r.cfg.impl.Capabilities()
	if r.cfg.origin != nil {
		c = Capabilities{OpenEndedRange: c.OpenEndedRange, ClosedRange: c.ClosedRange}
	}
	return c
}

// Capabilities returns what the implementation supports.
func (i Implementation) Capabilities() Capabilities {
	switch i {
	case GGCR:
		return Capabilities{ClosedRange: true, LazySession: true, StrictPatchStart: true,
			PartialPatchKept: true, SharedBlobs: true, SerialUploads: true}
	default:
		return Capabilities{OpenEndedRange: true, ClosedRange: true, UploadStatus: true, UploadCancel: true,
			LocationPerChunk: true, StrictPatchStart: true, PartialPatchKept: true, Mount: true}
	}
}

// backend is a registry implementation the middleware serves.
type backend interface {
	http.Handler
	shutdown() error
}

// newBackend builds the registry; a non-nil proxy makes distribution a
// pull-through cache.
func newBackend(impl Implementation, dir string, proxy *configuration.Proxy) (backend, error) {
	if impl == GGCR {
		return newGGCR(dir), nil
	}
	app, err := newApp(dir, proxy)
	if err != nil {
		return nil, err
	}
	return distributionBackend{app}, nil
}

type distributionBackend struct{ *handlers.App }

func (d distributionBackend) shutdown() error { return d.Shutdown() }

// newApp builds distribution's handler on the filesystem driver, as a
// pull-through cache when proxy is not nil. NewApp panics on configuration
// errors (and, in proxy mode, when the origin does not answer); that panic
// is turned into an error here.
func newApp(dir string, proxy *configuration.Proxy) (app *handlers.App, err error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("http secret: %w", err)
	}
	cfg := &configuration.Configuration{}
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = hex.EncodeToString(secret)
	cfg.Storage = configuration.Storage{
		// The filesystem driver, not inmemory: inmemory copies its whole
		// buffer on every write, so a 64 MiB upload takes ~25 s.
		"filesystem": configuration.Parameters{"rootdirectory": dir},
		// The purger would start a goroutine that outlives the registry.
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		"delete":      configuration.Parameters{"enabled": true},
	}
	if proxy != nil {
		cfg.Proxy = *proxy
	}
	defer func() {
		if p := recover(); p != nil {
			app, err = nil, fmt.Errorf("distribution NewApp: %v", p)
		}
	}()
	return handlers.NewApp(context.Background(), cfg), nil
}

// ggcrBackend is go-containerregistry's registry. It starts no goroutine,
// so there is nothing to shut down.
type ggcrBackend struct{ http.Handler }

func (ggcrBackend) shutdown() error { return nil }

// newGGCR stores committed blobs on disk: the in-memory handler would hold
// every blob in RAM. Upload sessions stay in RAM whatever the handler (ggcr
// keeps them in a map until the PUT), so a blob being uploaded costs its
// size in memory; the disk handler re-hashes a blob on every HEAD and GET.
// ggcr logs each request through its own logger, silenced here; a digest
// mismatch is still logged through the global log package.
func newGGCR(dir string) backend {
	return ggcrBackend{ggcr.New(
		ggcr.Logger(log.New(io.Discard, "", 0)),
		ggcr.WithBlobHandler(ggcr.NewDiskBlobHandler(dir)),
	)}
}

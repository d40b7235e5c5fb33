package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/sturdyoci/sturdy/internal/httpblob"
)

// URLSource reads blobs from plain HTTP(S) URLs, the way many model
// registries hand them out next to, or instead of, the OCI API
// (pre-signed object-store links). It is a content.ReadOnlyStorage:
// CopyGraph takes it as a source and reads each blob as it reads a
// registry's, with ranged resume (a closed Range, only a matching 206
// accepted; a server that ignores or refuses Range is read from 0 and
// the bytes already here dropped), the retry policy, the stall and
// low-speed watchdogs and the digest check. OpenURL gives one blob as
// such a reader.
//
// Its zero value serves nothing: set URL.
type URLSource struct {
	// URL returns the URL of desc's content. It is asked again for every
	// reopen, so that a pre-signed link that expired can be renewed. An
	// error wrapping errdef.ErrNotFound means the source does not have
	// desc.
	URL func(ctx context.Context, desc ocispec.Descriptor) (string, error)
	// Client sends the requests; nil means http.DefaultClient. Give it no
	// retrying transport: sturdy's loop is the one retry layer.
	Client *http.Client
	// Header is added to every request (an API key, say), and dropped
	// when a redirect leaves the URL's host.
	Header http.Header

	stall time.Duration // from Options, set by rewireTarget: every request watched
}

// Fetch implements content.Fetcher: one GET of the whole content, not
// verified (as any Fetcher; CopyGraph and OpenURL verify).
func (s *URLSource) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return s.openRange(ctx, desc, 0, desc.Size)
}

// Exists implements content.ReadOnlyStorage. It sends no request
// (pre-signed links often refuse HEAD): desc exists when URL gives it a
// URL.
func (s *URLSource) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if s.URL == nil {
		return false, nil
	}
	_, err := s.URL(ctx, desc)
	if errors.Is(err, errdef.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *URLSource) openRange(ctx context.Context, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error) {
	if err := httpblob.ValidateDigest(desc); err != nil {
		return nil, err
	}
	if s.URL == nil {
		return nil, fmt.Errorf("%s: URLSource without URL: %w", desc.Digest, errdef.ErrNotFound)
	}
	u, err := s.URL(ctx, desc)
	if err != nil {
		return nil, err
	}
	return httpblob.OpenURL(ctx, watchedDoer{s.client(), s.stall}, u, s.Header, desc, start, end)
}

// client returns the client, made to drop Header's keys when a redirect
// leaves the URL's host: an API key meant for the registry must not reach
// the storage it redirects to (net/http forwards custom headers).
func (s *URLSource) client() *http.Client {
	c := http.DefaultClient
	if s.Client != nil {
		c = s.Client
	}
	if len(s.Header) == 0 {
		return c
	}
	cc := *c
	prev := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && req.URL.Host != via[0].URL.Host {
			for k := range s.Header {
				req.Header.Del(k)
			}
		}
		if prev != nil {
			return prev(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}

// watched returns s whose requests are watched for silence under opts.
func (s *URLSource) watched(opts Options) *URLSource {
	c := *s
	c.stall = opts.watchdogConfig().stall
	return &c
}

// watchedDoer sends every request through watchRequest.
type watchedDoer struct {
	c     httpblob.Doer
	stall time.Duration
}

func (d watchedDoer) Do(req *http.Request) (*http.Response, error) {
	return watchRequest(d.c, req, d.stall)
}

// OpenURL returns desc's content from src as a reader that heals itself:
// a broken or stalled connection is reopened where it stopped (a ranged
// GET to the URL src gives again), under opts.Retry, with events to
// opts.Observer; the digest is checked over the whole stream, and the
// last Read returns content.ErrMismatchedDigest instead of io.EOF when it
// does not match. Errors are *BlobError naming desc.
func OpenURL(ctx context.Context, src *URLSource, desc ocispec.Descriptor, opts Options) (io.ReadCloser, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := httpblob.ValidateDigest(desc); err != nil {
		return nil, blobError(desc, fromSource(err))
	}
	opts.Observer, opts.Logger = opts.observer(), nil
	return openFetched(ctx, desc, newSource(src.watched(opts), opts), opts)
}

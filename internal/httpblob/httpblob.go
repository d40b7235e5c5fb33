// Package httpblob speaks the parts of the OCI distribution protocol that
// oras-go's remote.Repository does not: a ranged blob GET that resumes a
// broken download, and the chunked upload protocol (POST, PATCH with
// Content-Range, GET for the status, PUT ?digest=) that resumes a broken
// upload. Requests go through the repository's own client, so auth, its
// token cache and the scopes oras-go would use all apply.
package httpblob

import (
	"context"
	_ "crypto/sha512" // sha512 digests are verifiable only with it linked
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Errors callers branch on.
var (
	// ErrRangeIgnored: the server answered a ranged GET with the whole
	// blob (200), so the download cannot continue where it broke.
	ErrRangeIgnored = errors.New("registry ignored the Range header")
	// ErrBadContentRange: a 206 whose Content-Range does not start at the
	// requested offset or does not match the blob size.
	ErrBadContentRange = errors.New("registry sent a Content-Range that does not match the request")
	// ErrRangeRefused: the server answered a ranged GET with 416 although
	// the range lies inside the blob (some registries serve only some
	// Range forms).
	ErrRangeRefused = errors.New("registry refused a Range inside the blob")
	// ErrChunkedUnsupported: the registry refused the chunked upload
	// protocol.
	ErrChunkedUnsupported = errors.New("registry does not support resumable chunked uploads")
	// ErrNoUploadStatus: the registry cannot report an upload's offset: its
	// status query is missing (400, 404, 405, 501) or answers without a
	// usable Range header.
	ErrNoUploadStatus = errors.New("registry cannot report an upload's offset")
	// ErrUnsafeLocation: an upload Location on another host or downgrading
	// https to http; oras-go refuses these too (GHSA-jxpm-75mh-9fp7).
	ErrUnsafeLocation = errors.New("unsafe upload location")
)

// Repo addresses one repository through a remote.Repository's client.
type Repo struct {
	Client    remote.Client
	Ref       registry.Reference
	PlainHTTP bool
}

// FromRepository returns the Repo behind r.
func FromRepository(r *remote.Repository) *Repo {
	c := r.Client
	if c == nil {
		c = auth.DefaultClient
	}
	return &Repo{Client: c, Ref: r.Reference, PlainHTTP: r.PlainHTTP}
}

func (r *Repo) scheme() string {
	if r.PlainHTTP {
		return "http"
	}
	return "https"
}

func (r *Repo) base() string {
	return fmt.Sprintf("%s://%s/v2/%s", r.scheme(), r.Ref.Host(), r.Ref.Repository)
}

func (r *Repo) pullCtx(ctx context.Context) context.Context {
	return auth.AppendRepositoryScope(ctx, r.Ref, auth.ActionPull)
}

func (r *Repo) pushCtx(ctx context.Context) context.Context {
	return auth.AppendRepositoryScope(ctx, r.Ref, auth.ActionPull, auth.ActionPush)
}

// ValidateDigest refuses a digest that sturdy cannot verify or that is not
// safe in a URL: an unknown or unavailable algorithm, or an encoded part
// that is not the algorithm's hex form (path text such as "../" included).
// The error wraps errdef.ErrInvalidDigest and is permanent.
func ValidateDigest(desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return retrypolicy.Permanent(fmt.Errorf("%s %q: %w: %w", desc.MediaType, desc.Digest, errdef.ErrInvalidDigest, err))
	}
	return nil
}

// OpenRange GETs desc's bytes [start, end). The whole blob (0, desc.Size)
// is a plain GET. Any other span is the closed range
// Range: bytes=start-(end-1), which every registry serves (some refuse
// the open-ended form), and only a 206 whose Content-Range names exactly
// that span and desc.Size is accepted. A 200 returns ErrRangeIgnored with
// the full body still open, so the caller may discard up to start instead
// of opening yet another connection; a 416 returns ErrRangeRefused and a
// mismatched 206 ErrBadContentRange, both with no body: the caller reads
// from 0. The client follows redirects (to storage) afresh on every call,
// and net/http keeps the Range header across them.
func (r *Repo) OpenRange(ctx context.Context, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error) {
	if err := ValidateDigest(desc); err != nil {
		return nil, err
	}
	return OpenURL(r.pullCtx(ctx), r.Client, r.base()+"/blobs/"+desc.Digest.String(), nil, desc, start, end)
}

// Doer sends a request: an *http.Client, or oras-go's auth client.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// OpenURL GETs desc's bytes [start, end) at u, with the checks of
// OpenRange, for any HTTP(S) URL that serves the blob (a pre-signed
// object-store link). header, if not nil, is added to the request.
func OpenURL(ctx context.Context, client Doer, u string, header http.Header, desc ocispec.Descriptor, start, end int64) (io.ReadCloser, error) {
	if start < 0 || end > desc.Size || start > end || (start == end && desc.Size > 0) {
		return nil, retrypolicy.Permanent(fmt.Errorf("blob %s: bytes %d-%d outside %d bytes: %w", desc.Digest, start, end-1, desc.Size, content.ErrInvalidDescriptorSize))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, retrypolicy.Permanent(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	ranged := start > 0 || end < desc.Size
	if ranged {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
			resp.Body.Close()
			return nil, fmt.Errorf("blob %s: server sent %d bytes, descriptor says %d: %w",
				desc.Digest, resp.ContentLength, desc.Size, content.ErrInvalidDescriptorSize)
		}
		if ranged {
			return resp.Body, ErrRangeIgnored
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusPartialContent && ranged:
		first, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != start || last != end-1 || (total >= 0 && total != desc.Size) {
			resp.Body.Close()
			return nil, fmt.Errorf("blob %s: asked for bytes %d-%d, got Content-Range %q: %w",
				desc.Digest, start, end-1, resp.Header.Get("Content-Range"), ErrBadContentRange)
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && ranged:
		defer resp.Body.Close()
		return nil, fmt.Errorf("blob %s: bytes %d-%d: %w: %w", desc.Digest, start, end-1, ErrRangeRefused, retrypolicy.FromResponse(resp))
	case resp.StatusCode == http.StatusNotFound:
		// errdef.ErrNotFound, as oras-go's own Fetch reports it.
		defer resp.Body.Close()
		return nil, fmt.Errorf("blob %s: %w: %w", desc.Digest, errdef.ErrNotFound, retrypolicy.FromResponse(resp))
	default:
		defer resp.Body.Close()
		return nil, retrypolicy.FromResponse(resp)
	}
}

// notFoundOnUpload reads a 404 on an upload URL: BLOB_UPLOAD_UNKNOWN is a
// session the registry lost (the caller starts a new one); anything else
// is a route the registry does not have, wrapped in unsupported.
func notFoundOnUpload(resp *http.Response, unsupported error) error {
	err := retrypolicy.FromResponse(resp)
	var se *retrypolicy.StatusError
	if errors.As(err, &se) && slices.Contains(se.Codes, errcode.ErrorCodeBlobUploadUnknown) {
		return err
	}
	return fmt.Errorf("%w: %w", unsupported, err)
}

// parseContentRange reads "bytes a-b/size" (size may be "*": -1).
func parseContentRange(v string) (start, end, total int64, ok bool) {
	v = strings.TrimSpace(v)
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, size, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, false
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, false
	}
	total = -1
	if size != "*" {
		if total, err = strconv.ParseInt(size, 10, 64); err != nil || total <= end {
			return 0, 0, 0, false
		}
	}
	return start, end, total, true
}

// Upload is one chunked upload session.
type Upload struct {
	repo *Repo
	// origin is the URL the session was started at; every Location must
	// stay on its host and scheme.
	origin *url.URL
	// location is the newest Location the registry gave.
	location *url.URL
	// Offset is the number of bytes the registry has confirmed.
	Offset int64
	// MinChunk is the registry's OCI-Chunk-Min-Length, 0 if none.
	MinChunk int64
}

// StartUpload POSTs a new upload session.
func (r *Repo) StartUpload(ctx context.Context) (*Upload, error) {
	if err := r.Ref.ValidateRepository(); err != nil {
		return nil, retrypolicy.Permanent(err)
	}
	u := r.base() + "/blobs/uploads/"
	req, err := http.NewRequestWithContext(r.pushCtx(ctx), http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return nil, retrypolicy.FromResponse(resp)
	}
	up := &Upload{repo: r, origin: req.URL}
	if err := up.follow(resp); err != nil {
		return nil, err
	}
	if v, err := strconv.ParseInt(resp.Header.Get("OCI-Chunk-Min-Length"), 10, 64); err == nil && v > 0 {
		up.MinChunk = v
	}
	return up, nil
}

// ResumeUpload continues a session this repository's registry started
// earlier (in another process) at location, with the checks StartUpload
// makes on a Location: same host and port, no downgrade from https. Its
// Offset is 0 until Status asks.
func (r *Repo) ResumeUpload(location string) (*Upload, error) {
	if err := r.Ref.ValidateRepository(); err != nil {
		return nil, retrypolicy.Permanent(err)
	}
	origin, err := url.Parse(r.base() + "/blobs/uploads/")
	if err != nil {
		return nil, err
	}
	loc, err := url.Parse(location)
	if err != nil || loc.Host == "" {
		return nil, fmt.Errorf("%w: not an absolute URL", ErrUnsafeLocation)
	}
	up := &Upload{repo: r, origin: origin}
	if err := up.check(loc); err != nil {
		return nil, err
	}
	up.location = loc
	return up, nil
}

// Location is the session's newest Location. It carries the session's
// token (distribution's _state): keep it secret.
func (up *Upload) Location() string { return up.location.String() }

// follow takes the response's Location as the session's next URL, after
// the same checks oras-go makes.
func (up *Upload) follow(resp *http.Response) error {
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrChunkedUnsupported, err)
	}
	if err := up.check(loc); err != nil {
		return err
	}
	up.location = loc
	return nil
}

// check refuses a Location on another host or one that downgrades https.
func (up *Upload) check(loc *url.URL) error {
	if !sameHost(loc, up.origin) {
		return fmt.Errorf("%w: Location host %q differs from registry host %q", ErrUnsafeLocation, loc.Host, up.origin.Host)
	}
	if up.origin.Scheme == "https" && loc.Scheme != "https" {
		return fmt.Errorf("%w: Location downgrades https to %s", ErrUnsafeLocation, loc.Scheme)
	}
	return nil
}

func sameHost(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	return a.Hostname() == b.Hostname() && port(a) == port(b)
}

// Status asks the registry how many bytes it holds (GET on the newest
// Location, its Range header) and updates Offset and the Location.
func (up *Upload) Status(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(up.repo.pushCtx(ctx), http.MethodGet, up.location.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := up.repo.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusAccepted:
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotImplemented,
		// distribution v2 (Harbor's) answers a status query whose _state
		// is older than what it holds (after a broken PATCH) with 416,
		// and cancels the session.
		http.StatusRequestedRangeNotSatisfiable:
		return 0, fmt.Errorf("%w: %w", ErrNoUploadStatus, retrypolicy.FromResponse(resp))
	case http.StatusNotFound:
		return 0, notFoundOnUpload(resp, ErrNoUploadStatus)
	default:
		return 0, retrypolicy.FromResponse(resp)
	}
	n, ok := parseUploadRange(resp.Header.Get("Range"))
	if !ok {
		return 0, fmt.Errorf("%w: HTTP %d without a usable Range header", ErrNoUploadStatus, resp.StatusCode)
	}
	if resp.Header.Get("Location") != "" {
		if err := up.follow(resp); err != nil {
			return 0, err
		}
	}
	up.Offset = n
	return n, nil
}

// parseUploadRange reads an upload's "0-N" Range header (some registries
// write "bytes=0-N") as N+1 bytes. distribution writes "0-0" for an empty
// upload as well as for one byte; this reads it as 0, and a caller whose
// PATCH at 0 keeps getting 416 starts a fresh session.
func parseUploadRange(v string) (int64, bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "bytes=")
	a, b, ok := strings.Cut(v, "-")
	if !ok || a != "0" {
		return 0, false
	}
	end, err := strconv.ParseInt(b, 10, 64)
	if err != nil || end < 0 || end == math.MaxInt64 {
		return 0, false
	}
	if end == 0 {
		return 0, true
	}
	return end + 1, true
}

// ErrChunkTooLarge is returned by Patch when the registry, or a proxy in
// front of it, refused the chunk's size (413): send smaller chunks.
var ErrChunkTooLarge = errors.New("registry refused the chunk's size")

// ErrOffsetMismatch is returned by Patch when the registry answered 416:
// it holds a different number of bytes than Offset. Call Status and go on
// from what it reports.
var ErrOffsetMismatch = errors.New("registry holds a different upload offset")

// Patch streams n bytes of body as the chunk starting at Offset and, on
// success, advances Offset and follows the new Location. n must be known:
// the Content-Range and Content-Length headers carry it. getBody, if not
// nil, gives the same n bytes afresh; the auth client uses it to send the
// chunk again after a 401 (a token that expired between chunks).
//
// As with any request, the transport closes body, possibly after Patch
// returns: a caller that reuses what body reads from must wait for Close.
func (up *Upload) Patch(ctx context.Context, body io.ReadCloser, n int64, getBody func() (io.ReadCloser, error)) error {
	if n <= 0 {
		body.Close()
		return nil
	}
	req, err := http.NewRequestWithContext(up.repo.pushCtx(ctx), http.MethodPatch, up.location.String(), body)
	if err != nil {
		body.Close()
		return err
	}
	req.ContentLength = n
	req.GetBody = getBody
	req.Header.Set("Content-Type", "application/octet-stream")
	// The bare "a-b" form: distribution answers the RFC form
	// "bytes a-b/*" with a 500.
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", up.Offset, up.Offset+n-1))
	resp, err := up.repo.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusNoContent, http.StatusCreated:
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: %w", ErrOffsetMismatch, retrypolicy.FromResponse(resp))
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%w: %w", ErrChunkTooLarge, retrypolicy.FromResponse(resp))
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType, http.StatusNotImplemented:
		// The registry cannot take a PATCH of this form (Google Artifact
		// Registry takes no chunked uploads at all): a monolithic upload
		// still can.
		return fmt.Errorf("%w: %w", ErrChunkedUnsupported, retrypolicy.FromResponse(resp))
	case http.StatusNotFound:
		return notFoundOnUpload(resp, ErrChunkedUnsupported)
	default:
		return retrypolicy.FromResponse(resp)
	}
	if err := up.follow(resp); err != nil {
		return err
	}
	// A success answers the whole chunk: the registry read every byte of
	// it. Its Range header is not taken over that: ECR's stays at the
	// first chunk's end, and distribution's reads "0-0" for one byte.
	up.Offset += n
	return nil
}

// Commit completes the upload with PUT ?digest=. The registry verifies the
// digest over everything it holds; nothing unverified is committed.
func (up *Upload) Commit(ctx context.Context, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return retrypolicy.Permanent(fmt.Errorf("%w: %w", errdef.ErrInvalidDigest, err))
	}
	u := *up.location
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(up.repo.pushCtx(ctx), http.MethodPut, u.String(), http.NoBody)
	if err != nil {
		return err
	}
	req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	req.ContentLength = 0
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := up.repo.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return retrypolicy.FromResponse(resp)
	}
	return nil
}

// Cancel deletes the upload session; errors are ignored because an
// abandoned session is garbage-collected by the registry anyway.
func (up *Upload) Cancel(ctx context.Context) {
	if up == nil || up.location == nil {
		return
	}
	req, err := http.NewRequestWithContext(up.repo.pushCtx(ctx), http.MethodDelete, up.location.String(), nil)
	if err != nil {
		return
	}
	if resp, err := up.repo.Client.Do(req); err == nil {
		resp.Body.Close()
	}
}

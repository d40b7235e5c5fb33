package transfer

import (
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sturdyoci/sturdy/internal/redact"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// ErrIncomplete is wrapped by the error of a Copy or CopyGraph whose root
// (or a manifest under it) was not pushed because something under it
// failed. The blob errors are joined next to it.
var ErrIncomplete = errors.New("transfer incomplete: manifest not pushed")

// BlobError is the failure of one blob or manifest: its descriptor, the
// attempts made, the side that failed and the cause. Copy joins one per
// failed node; BlobErrors returns them all, errors.As finds the first and
// errors.Is reaches the causes.
type BlobError struct {
	Desc     ocispec.Descriptor
	Attempts int
	// Origin says which side failed, as oras-go's CopyError does.
	Origin Origin
	Err    error
}

// Origin is the side of a copy an error came from.
type Origin int

const (
	// OriginDestination: writing to the destination, or asking it what it
	// has, failed (the zero value: what is not known to be the source's).
	OriginDestination Origin = iota
	// OriginSource: reading from the source failed, or it served content
	// that does not match its descriptor (a digest that cannot be
	// verified included).
	OriginSource
)

func (o Origin) String() string {
	if o == OriginSource {
		return "source"
	}
	return "destination"
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("%s %s (%d bytes): %s: %d attempt(s): %s", nodeKind(e.Desc), e.Desc.Digest, e.Desc.Size, e.Origin, e.Attempts, Redact(e.Err.Error()))
}

// BlobErrors returns every *BlobError in err's tree, in order: the failed
// blobs and manifests of a Copy or CopyGraph (errors.As finds only the
// first). It returns nil when there is none.
func BlobErrors(err error) []*BlobError {
	var out []*BlobError
	var walk func(error)
	walk = func(err error) {
		for err != nil {
			if be, ok := err.(*BlobError); ok {
				out = append(out, be)
				return
			}
			switch u := err.(type) {
			case interface{ Unwrap() []error }:
				for _, e := range u.Unwrap() {
					walk(e)
				}
				return
			case interface{ Unwrap() error }:
				err = u.Unwrap()
			default:
				return
			}
		}
	}
	walk(err)
	return out
}

// sourceError marks an error as the source's.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// fromSource marks err as the source's; nil stays nil.
func fromSource(err error) error {
	if err == nil {
		return nil
	}
	return &sourceError{err}
}

// originOf tells a source's error (marked, or the final error of a
// healing reader) from the destination's.
func originOf(err error) Origin {
	var se *sourceError
	var re *readerError
	if errors.As(err, &se) || errors.As(err, &re) || errors.Is(err, content.ErrMismatchedDigest) || digestRejected(err) {
		// A digest mismatch found by the destination is still the
		// source's content.
		return OriginSource
	}
	return OriginDestination
}

// nodeKind names what desc is in messages: "manifest" (indexes included)
// or "blob".
func nodeKind(desc ocispec.Descriptor) string {
	if isManifest(desc) {
		return "manifest"
	}
	return "blob"
}

func (e *BlobError) Unwrap() error { return e.Err }

func blobError(desc ocispec.Descriptor, err error) error {
	if err == nil {
		return nil
	}
	attempts, origin := 1, originOf(err)
	var re *retrypolicy.Error
	if errors.As(err, &re) {
		attempts = re.Attempts
		err = re.Err
	}
	return &BlobError{Desc: desc, Attempts: attempts, Origin: origin, Err: err}
}

// Redact applies sturdy's redaction policy to any text, such as an error
// from plain oras-go that a program is about to log: every query value of
// a URL in it is replaced by REDACTED unless it is one of the distribution
// protocol's harmless parameters (digest, mount, from, n, last), and user
// info in URLs is removed. sturdy's own errors, events and logs are
// redacted already.
func Redact(text string) string { return redact.Text(text) }

// redacted keeps err for errors.Is/As but takes upload state and signed
// credentials out of its text.
func redacted(err error) error {
	if err == nil {
		return nil
	}
	if msg := err.Error(); Redact(msg) != msg {
		return &redactedError{err}
	}
	return err
}

type redactedError struct{ err error }

func (e *redactedError) Error() string { return Redact(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

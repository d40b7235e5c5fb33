package transfer

import (
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/internal/redact"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// ErrIncomplete is wrapped by the error of a Copy or CopyGraph whose root
// (or a manifest under it) was not pushed because something under it
// failed. The blob errors are joined next to it.
var ErrIncomplete = errors.New("transfer incomplete: manifest not pushed")

// BlobError is the failure of one blob or manifest: its descriptor, the
// attempts made and the cause. Copy joins one per failed node; errors.As
// finds each and errors.Is reaches the causes.
type BlobError struct {
	Desc     ocispec.Descriptor
	Attempts int
	Err      error
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("%s %s (%d bytes): %d attempt(s): %s", nodeKind(e.Desc), e.Desc.Digest, e.Desc.Size, e.Attempts, redactText(e.Err.Error()))
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
	attempts := 1
	var re *retrypolicy.Error
	if errors.As(err, &re) {
		attempts = re.Attempts
		err = re.Err
	}
	return &BlobError{Desc: desc, Attempts: attempts, Err: err}
}

// redactText applies sturdy's one redaction policy (internal/redact) to an
// error text: oras-go's and net/http's errors quote request URLs whole,
// pre-signed storage URLs after a redirect included.
func redactText(s string) string { return redact.Text(s) }

// redacted keeps err for errors.Is/As but takes upload state and signed
// credentials out of its text.
func redacted(err error) error {
	if err == nil {
		return nil
	}
	if msg := err.Error(); redactText(msg) != msg {
		return &redactedError{err}
	}
	return err
}

type redactedError struct{ err error }

func (e *redactedError) Error() string { return redactText(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

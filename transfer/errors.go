package transfer

import (
	"errors"
	"fmt"
	"regexp"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

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
	return fmt.Sprintf("blob %s (%d bytes): %d attempt(s): %s", e.Desc.Digest, e.Desc.Size, e.Attempts, redactText(e.Err.Error()))
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

// secretParam matches query parameters whose values must not reach an
// error text: distribution's _state (a signed upload session) and
// pre-signed storage credentials. oras-go's own errors quote request URLs
// whole.
var secretParam = regexp.MustCompile(`(?i)([?&](?:_state|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|sig|signature|token|access_token)=)[^&"'\s]*`)

func redactText(s string) string {
	return secretParam.ReplaceAllString(s, "${1}REDACTED")
}

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

package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"oras.land/oras-go/v2/content/memory"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// oras-go quotes request URLs whole in its errors; an upload URL carries
// distribution's _state (a signed session) and storage URLs carry
// signatures. None may reach an error's text; errors.Is/As still work.
func TestBlobErrorRedactsAndUnwraps(t *testing.T) {
	inner := &url.Error{Op: "Put", URL: "http://r:5000/v2/m/blobs/uploads/u?_state=SECRET.JWT&digest=sha256%3Aab&X-Amz-Signature=SIG",
		Err: fmt.Errorf("write: %w", syscall.ECONNRESET)}
	desc := ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1}
	err := blobError(desc, &retrypolicy.Error{Attempts: 4, Err: inner})
	msg := err.Error()
	for _, secret := range []string{"SECRET.JWT", "SIG"} {
		if strings.Contains(msg, secret) {
			t.Fatalf("error text leaks %q: %s", secret, msg)
		}
	}
	for _, want := range []string{desc.Digest.String(), "4 attempt(s)", "_state=REDACTED", "digest=sha256"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error text %q lacks %q", msg, want)
		}
	}
	var be *BlobError
	if !errors.As(err, &be) || be.Attempts != 4 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("chain broken: %#v", err)
	}
	if r := redacted(inner); strings.Contains(r.Error(), "SECRET") || !errors.Is(r, syscall.ECONNRESET) {
		t.Fatalf("redacted(): %v", r)
	}
}

func TestEventErrorsAreRedacted(t *testing.T) {
	var got []error
	ev := newBlobEvents(progress.Func(func(e progress.Event) { got = append(got, e.Err) }), ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1})
	leak := errors.New(`PATCH "http://r/v2/m/blobs/uploads/u?_state=SECRET": reset`)
	ev.retrying(retrypolicy.RetryInfo{Attempt: 1, Reason: "connection reset", Err: leak, Op: opFetch}, progress.Range{})
	ev.failed("connection reset", leak)
	for _, err := range got {
		if strings.Contains(err.Error(), "SECRET") || !errors.Is(err, leak) {
			t.Fatalf("event error %v", err)
		}
	}
}

func TestBlobErrorNamesManifests(t *testing.T) {
	m := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 2}
	b := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("b"), Size: 2}
	if msg := blobError(m, errors.New("x")).Error(); !strings.HasPrefix(msg, "manifest "+m.Digest.String()) {
		t.Fatalf("manifest error text: %s", msg)
	}
	if msg := blobError(b, errors.New("x")).Error(); !strings.HasPrefix(msg, "blob "+b.Digest.String()) {
		t.Fatalf("blob error text: %s", msg)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	for _, o := range []Options{
		{Concurrency: -1}, {LowSpeedTime: -time.Second}, {MaxMetadataBytes: -1}, {ChunkSize: -1},
		{Retry: retrypolicy.Config{MaxAttempts: -1}},
	} {
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("%+v: err = %v", o, err)
		}
		if _, cerr := Copy(context.Background(), memory.New(), "v1", memory.New(), "", o); !errors.Is(cerr, ErrInvalidOptions) {
			t.Fatalf("Copy with %+v: %v", o, cerr)
		}
		if _, ferr := Wrap(memory.New(), o).Exists(context.Background(), ocispec.DescriptorEmptyJSON); !errors.Is(ferr, ErrInvalidOptions) {
			t.Fatalf("Wrap with %+v: %v", o, ferr)
		}
	}
	// Negative means off where off makes sense.
	if err := (Options{StallTimeout: -1, LowSpeedLimit: -1}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func ExampleRedact() {
	err := errors.New(`Get "https://bucket.oss-cn-hangzhou.aliyuncs.com/blob?security-token=TOKEN&x-oss-signature=SIG": dial tcp: connection refused`)
	fmt.Println(Redact(err.Error()))
	// Output:
	// Get "https://bucket.oss-cn-hangzhou.aliyuncs.com/blob?security-token=REDACTED&x-oss-signature=REDACTED": dial tcp: connection refused
}

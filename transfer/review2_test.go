package transfer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// resettingStore is a local store whose Fetch of one digest always fails
// with a connection reset, and which counts those fetches.
type resettingStore struct {
	*memory.Store
	fail    digest.Digest
	fetches atomic.Int64
}

func (s *resettingStore) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.Digest == s.fail {
		s.fetches.Add(1)
		return nil, fmt.Errorf("read: %w", syscall.ECONNRESET)
	}
	return s.Store.Fetch(ctx, d)
}

// unwrapTarget's doc: "so sturdy never runs its loops twice over the same
// request". Copy given a Wrap'd target that is not a *remote.Repository
// keeps the Wrap (rewireTarget unwraps registries only, newSource reads
// through the Wrap's Fetch), so every blob read runs the Wrap's retry loop
// inside Copy's: MaxAttempts 3 makes 9 fetches of a failing blob, and
// OnRetry reports 8 retries for 2 allowed.
func TestReview2CopyOfWrappedLocalTargetRetriesTwice(t *testing.T) {
	src, _, layers := artifact(t, 1000)
	s := &resettingStore{Store: src, fail: layers[0].Digest}
	var retries atomic.Int64
	opts := Options{Retry: fastRetry}
	opts.Retry.MaxAttempts = 3
	opts.Retry.OnRetry = func(retrypolicy.RetryInfo) { retries.Add(1) }
	_, err := Copy(context.Background(), Wrap(s, opts), "v1", memory.New(), "", opts)
	if err == nil {
		t.Fatal("copy of a blob that never reads succeeded")
	}
	if n := s.fetches.Load(); n != 3 || retries.Load() != 2 {
		t.Fatalf("MaxAttempts 3: %d fetches of the failing blob and %d OnRetry calls, want 3 and 2 (one retry layer)", n, retries.Load())
	}
}

// A registry's API hands out a blob through a redirect to object storage
// on another host (the usual pre-signed-link flow). URLSource.Header is
// documented as "an API key, say"; the package doc promises that
// credentials never follow a redirect to another host. net/http copies
// every header but Authorization/Cookie to the redirect target, so the
// API key is sent to the storage host.
func TestReview2URLSourceHeaderFollowsRedirectToAnotherHost(t *testing.T) {
	blob := bytes.Repeat([]byte("w"), 4096)
	desc := content.NewDescriptorFromBytes("application/octet-stream", blob)
	var mu sync.Mutex
	var leaked []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if k := r.Header.Get("X-Api-Key"); k != "" {
			leaked = append(leaked, k)
		}
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}))
	defer storage.Close()
	// Another host name for the same loopback server: "localhost" vs
	// "127.0.0.1" are different hosts to net/http.
	storageURL := strings.Replace(storage.URL, "127.0.0.1", "localhost", 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "secret-api-key" {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, storageURL+"/bucket/o?X-Amz-Signature=sig", http.StatusFound)
	}))
	defer api.Close()
	src := &URLSource{
		URL:    func(context.Context, ocispec.Descriptor) (string, error) { return api.URL + "/blobs/x", nil },
		Header: http.Header{"X-Api-Key": {"secret-api-key"}},
	}
	rc, err := OpenURL(context.Background(), src, desc, Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) != 0 {
		t.Fatalf("the API key went to the storage host on another host name: %q", leaked)
	}
}

// tagFlaky is a local store whose Tag fails once with a retryable error.
type tagFlaky struct {
	*memory.Store
	failed atomic.Bool
}

func (s *tagFlaky) Tag(ctx context.Context, d ocispec.Descriptor, ref string) error {
	if s.failed.CompareAndSwap(false, true) {
		return fmt.Errorf("write index: %w", syscall.ECONNRESET)
	}
	return s.Store.Tag(ctx, d, ref)
}

// RetryInfo.Op and Event.Op are documented to say "tag" for a retried
// tag. Copy into a store that is not a registry tags inside the manifest
// push's loop, so a retried Tag is reported as a "push" (and re-pushes the
// manifest).
func TestReview2RetriedTagIsReportedAsTag(t *testing.T) {
	src, _, _ := artifact(t, 100)
	var mu sync.Mutex
	var ops []string
	opts := Options{Retry: fastRetry}
	opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) {
		mu.Lock()
		ops = append(ops, ri.Op)
		mu.Unlock()
	}
	if _, err := Copy(context.Background(), src, "v1", &tagFlaky{Store: memory.New()}, "v1", opts); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ops) != 1 || ops[0] != opTag {
		t.Fatalf("OnRetry ops %q, want one %q", ops, opTag)
	}
}

// quotaStore fails every blob Fetch with an SDK error the built-in table
// does not know.
type quotaStore struct{ *memory.Store }

var errQuota = fmt.Errorf("storage quota service: busy")

func (s quotaStore) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.MediaType == ocispec.MediaTypeImageManifest {
		return s.Store.Fetch(ctx, d)
	}
	return nil, errQuota
}

// Verdict.Reason is "a short human reason for progress bars and logs".
// Retrying events carry the caller's classifier's reason, but the blob's
// Failed event (what a Tracker and progress.Log show as the failure) is
// labelled by the built-in table, which does not know the error.
func TestReview2FailedEventUsesTheClassifiersReason(t *testing.T) {
	src, _, _ := artifact(t, 100)
	var mu sync.Mutex
	var failed, retrying []string
	opts := Options{Retry: fastRetry, Observer: progress.Func(func(e progress.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Kind {
		case progress.Failed:
			failed = append(failed, e.Reason)
		case progress.Retrying:
			retrying = append(retrying, e.Reason)
		}
	})}
	opts.Retry.MaxAttempts = 2
	opts.Retry.Classify = func(err error) (retrypolicy.Verdict, bool) {
		if err != nil && strings.Contains(fmt.Sprint(err), "quota") {
			return retrypolicy.Verdict{Retryable: true, Reason: "quota busy"}, true
		}
		return retrypolicy.Verdict{}, false
	}
	_, err := Copy(context.Background(), quotaStore{src}, "v1", memory.New(), "", opts)
	if err == nil {
		t.Fatal("copy succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(retrying) == 0 || retrying[0] != "quota busy" {
		t.Fatalf("retrying reasons %q", retrying)
	}
	if len(failed) == 0 {
		t.Fatal("no Failed event")
	}
	for _, r := range failed {
		if r != "quota busy" {
			t.Fatalf("Failed event reasons %q, Retrying said %q", failed, retrying)
		}
	}
}

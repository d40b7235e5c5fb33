package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
	"oras.land/oras-go/v2/content/oci"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, registrytest.IgnoreLeaks()...) }

// The same pipeline, unwrapped and wrapped, against a registry that resets
// every blob download at each 2 MiB boundary. Only stable facts are
// printed.
func Example() {
	ctx := context.Background()
	reg, repo, weights, err := setup(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	dir, err := os.MkdirTemp("", "wraporas-example-*")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	plain, _ := oci.New(dir + "/unwrapped")
	if _, err := pipeline(ctx, repo, plain); err != nil {
		fmt.Println("unwrapped: failed:", retrypolicy.ShortReason(err))
	}

	layout, _ := oci.New(dir + "/wrapped")
	tracker := progress.NewTracker()
	opts := options(tracker)
	root, err := pipeline(ctx, transfer.Wrap(repo, opts), transfer.Wrap(layout, opts))
	if err != nil {
		fmt.Println("wrapped: failed:", err)
		return
	}
	fmt.Println("wrapped: ok")
	fmt.Println("resumed:", tracker.Summary().Resumes > 0)
	if err := verify(ctx, layout, root, weights); err != nil {
		fmt.Println("verify:", err)
		return
	}
	fmt.Println("digest verified")
	// Output:
	// unwrapped: failed: connection reset
	// wrapped: ok
	// resumed: true
	// digest verified
}

// TestRun runs main's program as it is.
func TestRun(t *testing.T) {
	// Lines serialises its writes; the rest come from run's goroutine.
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
}

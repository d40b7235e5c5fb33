package registrytest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sturdyoci/sturdy/examples/registrytest"
)

// A registry with two faults on blob downloads: a 503 with Retry-After, then
// a connection reset after 5 bytes. In a test, use registrytest.New(t).
func Example() {
	reg, err := registrytest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	ctx := context.Background()

	repo, err := reg.Repository("demo/model")
	if err != nil {
		fmt.Println(err)
		return
	}
	blob := []byte("hello, flaky world")
	desc := content.NewDescriptorFromBytes("application/octet-stream", blob)
	if err := repo.Push(ctx, desc, bytes.NewReader(blob)); err != nil {
		fmt.Println(err)
		return
	}

	reg.Inject(registrytest.Rule{
		Kind:   registrytest.BlobGet,
		Times:  1,
		Action: registrytest.Respond(503).WithRetryAfter(2 * time.Second),
	})
	reg.Inject(registrytest.Rule{
		Kind:   registrytest.BlobGet,
		Skip:   1, // the request the 503 answers
		Times:  1,
		Action: registrytest.ResetAfter(5),
	})

	_, err = content.FetchAll(ctx, repo, desc)
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		fmt.Println("first fetch:", resp.StatusCode, resp.Errors[0].Code)
	}
	_, err = content.FetchAll(ctx, repo, desc)
	fmt.Println("second fetch reset:", errors.Is(err, syscall.ECONNRESET))
	got, err := content.FetchAll(ctx, repo, desc)
	fmt.Printf("third fetch: %q %v\n", got, err)

	stats := reg.Stats().Kinds[registrytest.BlobGet]
	fmt.Println("blob GETs by status:", stats.Statuses)
	// Output:
	// first fetch: 503 UNAVAILABLE
	// second fetch reset: true
	// third fetch: "hello, flaky world" <nil>
	// blob GETs by status: map[200:2 503:1]
}

// A pull-through cache in front of an origin: distribution's proxy mode
// fetches a blob it lacks in full, whatever the Range, and serves ranges
// once it has cached it. Each registry has its own faults and counters.
func ExampleWithPullThrough() {
	origin, err := registrytest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer origin.Close()
	mirror, err := registrytest.Start(registrytest.WithPullThrough(origin))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mirror.Close()

	repo, err := origin.Repository("demo/model")
	if err != nil {
		fmt.Println(err)
		return
	}
	blob := []byte("cached on first use")
	desc := content.NewDescriptorFromBytes("application/octet-stream", blob)
	if err := repo.Push(context.Background(), desc, bytes.NewReader(blob)); err != nil {
		fmt.Println(err)
		return
	}

	url := mirror.URL() + "/v2/demo/model/blobs/" + desc.Digest.String()
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Range", "bytes=0-5")
		resp, err := mirror.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %q, the origin has sent %d blob bytes\n", resp.StatusCode, body,
			origin.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes)
	}
	// Output:
	// 200 "cached on first use", the origin has sent 19 blob bytes
	// 206 "cached", the origin has sent 19 blob bytes
}

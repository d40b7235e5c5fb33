package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// Every retry is visible: a retried manifest GET, blob HEAD, tag
// resolution or manifest PUT shows as a Retrying event of that manifest or
// blob (not only retries of a blob's bytes), and OnRetry names the
// operation and the descriptor.
func TestEveryRetryIsVisible(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind registrytest.Kind
		pull bool
		op   string
		// event: a Retrying event of the node is expected (a tag's
		// resolution concerns no descriptor yet: its event has none).
		event bool
	}{
		{"resolve", registrytest.ManifestGet, true, "resolve", false},
		{"manifest fetch", registrytest.ManifestGet, true, "fetch", true},
		{"blob exists", registrytest.BlobHead, false, "exists", true},
		{"manifest push", registrytest.ManifestPut, false, "push", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := registrytest.New(t)
			a := newArtifact(t, 1000)
			ev := &events{}
			var mu sync.Mutex
			var infos []retrypolicy.RetryInfo
			opts := transfer.Options{Retry: fast(3), Observer: ev}
			opts.Retry.OnRetry = func(ri retrypolicy.RetryInfo) {
				mu.Lock()
				infos = append(infos, ri)
				mu.Unlock()
			}
			var err error
			if tc.pull {
				src := seed(t, reg, "visible", a)
				reg.Inject(registrytest.Rule{Kind: tc.kind, Times: 1, Action: registrytest.Respond(http.StatusServiceUnavailable)})
				if tc.op == "resolve" {
					_, err = transfer.Copy(context.Background(), src, "v1", newLayout(t), "", opts)
				} else {
					// By digest: the manifest is fetched, not resolved.
					err = transfer.CopyGraph(context.Background(), src, newLayout(t), a.root, opts)
				}
			} else {
				reg.Inject(registrytest.Rule{Kind: tc.kind, Times: 1, Action: registrytest.Respond(http.StatusServiceUnavailable)})
				_, err = transfer.Copy(context.Background(), a.store, "v1", repo(t, reg, "visible"), "", opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(infos) != 1 || infos[0].Op != tc.op || !strings.Contains(infos[0].Reason, "503") {
				t.Fatalf("OnRetry saw %+v, want one %q retry", infos, tc.op)
			}
			if tc.event && infos[0].Desc.Digest == "" {
				t.Fatalf("OnRetry does not name the descriptor: %+v", infos[0])
			}
			r := ev.of(progress.Retrying)
			if !tc.event {
				// No descriptor yet: an event with a zero Desc, so that
				// a Logger shows the retry too.
				if len(r) != 1 || r[0].Op != tc.op || r[0].Desc.Digest != "" {
					t.Fatalf("events %+v, want one %s retry with no descriptor", r, tc.op)
				}
				return
			}
			if len(r) != 1 || r[0].Op != tc.op || r[0].Desc.Digest != infos[0].Desc.Digest {
				t.Fatalf("Retrying events %+v, want one of %s for %s", r, tc.op, infos[0].Desc.Digest)
			}
		})
	}
}

package main

import (
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// retryAfter is what the registry's 503s ask for: longer than the demo's
// 200 ms initial backoff, so honouring it is visible in the log.
const retryAfter = time.Second

// faultPlan is the set of wire faults of one phase. The same plan is
// injected again for the plain oras.Copy comparison, so both meet the same
// link.
type faultPlan []plannedFault

// plannedFault is a rule and what a person is told about it.
type plannedFault struct {
	rule registrytest.Rule
	text string
}

// pushFaults breaks uploads: every body is reset at each multiple of
// period in blob coordinates (PATCH for sturdy's chunked upload, PUT for
// oras-go's monolithic one and for sturdy's blobs under 1 MiB), the first
// two upload starts get 503 with Retry-After, as does the third PATCH
// (answered before its body is read, as proxies do), and one PATCH
// stalls: the registry stops reading its body without closing the
// connection. Only shards (1 MiB and more) are uploaded with PATCH; with
// resets every period each needs several, so the fifth PATCH continues a
// shard, which then resumes where it stalled. It stalls at the first byte
// because which PATCH is fifth depends on how the blobs interleave. The
// report says how often each fault applied.
func pushFaults(period int64) faultPlan {
	return faultPlan{
		{registrytest.Rule{Kind: registrytest.UploadPatch | registrytest.UploadPut, Action: registrytest.ResetEvery(period)},
			"upload bodies: TCP reset at every " + ui.Bytes(period) + " boundary of each blob"},
		{registrytest.Rule{Kind: registrytest.UploadPost, Times: 2, Action: registrytest.Respond(503).WithRetryAfter(retryAfter)},
			fmt.Sprintf("upload starts: the first 2 answered 503 with Retry-After: %s", retryAfter)},
		// The next two count PATCHes only, so they never pick the same one.
		{registrytest.Rule{Kind: registrytest.UploadPatch, Skip: 2, Times: 1, Action: registrytest.Respond(503).WithRetryAfter(retryAfter)},
			fmt.Sprintf("upload PATCH #3: 503 with Retry-After: %s", retryAfter)},
		{registrytest.Rule{Kind: registrytest.UploadPatch, Skip: 4, Times: 1, Action: registrytest.Stall(0)},
			"upload PATCH #5: the registry reads none of its body (stall)"},
	}
}

// pullFaults breaks downloads the same way: resets at every multiple of
// period, a burst of two 503s on the first shard, and the second GET of
// the second shard stalls part-way. Large blobs come over several
// connections in ranges (8 MiB by default) that rarely cross a period's
// boundary, so eight responses are also cut after cutAt bytes: each of
// those ranges breaks and heals on its own while the others go on.
func pullFaults(period int64, shard1, shard2 digest.Digest) faultPlan {
	stallAt := min(1<<20, period/2)
	cutAt := 5 * transfer.DefaultPullRangeSize / 8
	return faultPlan{
		{registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(period)},
			"blob GETs: TCP reset at every " + ui.Bytes(period) + " boundary of each blob"},
		{registrytest.Rule{Kind: registrytest.BlobGet, Skip: 8, Times: 8, Action: registrytest.ResetAfter(cutAt)},
			"blob GETs #9 to #16: cut after " + ui.Bytes(cutAt) + " (TCP reset)"},
		{registrytest.Rule{Kind: registrytest.BlobGet, Digest: shard1, Times: 2, Action: registrytest.Respond(503).WithRetryAfter(retryAfter)},
			fmt.Sprintf("shard 1: its first 2 GETs answered 503 with Retry-After: %s", retryAfter)},
		{registrytest.Rule{Kind: registrytest.BlobGet, Digest: shard2, Skip: 1, Times: 1, Action: registrytest.Stall(stallAt)},
			"shard 2: its second GET stops sending after " + ui.Bytes(stallAt) + " (stall)"},
	}
}

// inject replaces the registry's faults with the plan's and returns
// them, to ask afterwards how often each applied.
func (p faultPlan) inject(reg *registrytest.Registry) []*registrytest.Fault {
	reg.ClearFaults()
	faults := make([]*registrytest.Fault, len(p))
	for i, f := range p {
		faults[i] = reg.Inject(f.rule)
	}
	return faults
}

// applied reports how many requests each fault acted on, in plan order.
func applied(faults []*registrytest.Fault) []int {
	n := make([]int, len(faults))
	for i, f := range faults {
		n[i] = f.Applied()
	}
	return n
}

func (p faultPlan) describe(w io.Writer) {
	if len(p) == 0 {
		fmt.Fprintln(w, "faults: none")
		return
	}
	fmt.Fprintln(w, "faults on the wire:")
	for _, f := range p {
		fmt.Fprintln(w, "  "+f.text)
	}
}

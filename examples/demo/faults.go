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

// pullPerConn caps each connection of the pull phase.
const pullPerConn = 64 << 20

// faultPlan is the set of wire faults of one phase. The same plan is
// injected again for the plain oras.Copy comparison, so both meet the same
// link.
type faultPlan []plannedFault

// plannedFault is a rule and what a person is told about it.
type plannedFault struct {
	rule registrytest.Rule
	text string
	// perConn, if set, replaces rule: every connection is capped at
	// perConn bytes per second downloaded.
	perConn int64
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
		{rule: registrytest.Rule{Kind: registrytest.UploadPatch | registrytest.UploadPut, Action: registrytest.ResetEvery(period)},
			text: "upload bodies: TCP reset at every " + ui.Bytes(period) + " boundary of each blob"},
		{rule: registrytest.Rule{Kind: registrytest.UploadPost, Times: 2, Action: registrytest.Respond(503).WithRetryAfter(retryAfter)},
			text: fmt.Sprintf("upload starts: the first 2 answered 503 with Retry-After: %s", retryAfter)},
		// The next two count PATCHes only, so they never pick the same one.
		{rule: registrytest.Rule{Kind: registrytest.UploadPatch, Skip: 2, Times: 1, Action: registrytest.Respond(503).WithRetryAfter(retryAfter)},
			text: fmt.Sprintf("upload PATCH #3: 503 with Retry-After: %s", retryAfter)},
		{rule: registrytest.Rule{Kind: registrytest.UploadPatch, Skip: 4, Times: 1, Action: registrytest.Stall(0)},
			text: "upload PATCH #5: the registry reads none of its body (stall)"},
	}
}

// pullFaults breaks downloads the same way: resets at every multiple of
// period, a burst of two 503s on the first shard, and the second GET of
// the second shard stalls part-way. Large blobs come over several
// connections in ranges (8 MiB by default) that rarely cross a period's
// boundary, so eight responses are also cut after cutAt bytes: each of
// those ranges breaks and heals on its own while the others go on.
//
// Every connection is also capped at pullPerConn, as object stores and CDNs
// cap each connection: sturdy times the first ranges of each shard over one
// connection, sees the link is the limit, and fetches the rest in ranges.
// (On an uncapped loopback one connection keeps up with the destination,
// and that is what it would keep.)
func pullFaults(period int64, shard1, shard2 digest.Digest) faultPlan {
	stallAt := min(1<<20, period/2)
	cutAt := 5 * transfer.DefaultPullRangeSize / 8
	return faultPlan{
		{perConn: pullPerConn, text: "every connection capped at " + ui.Bytes(pullPerConn) + "/s down (a per-connection limit, as object stores and CDNs have)"},
		{rule: registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(period)},
			text: "blob GETs: TCP reset at every " + ui.Bytes(period) + " boundary of each blob"},
		{rule: registrytest.Rule{Kind: registrytest.BlobGet, Skip: 8, Times: 8, Action: registrytest.ResetAfter(cutAt)},
			text: "blob GETs #9 to #16: cut after " + ui.Bytes(cutAt) + " (TCP reset)"},
		{rule: registrytest.Rule{Kind: registrytest.BlobGet, Digest: shard1, Times: 2, Action: registrytest.Respond(503).WithRetryAfter(retryAfter)},
			text: fmt.Sprintf("shard 1: its first 2 GETs answered 503 with Retry-After: %s", retryAfter)},
		{rule: registrytest.Rule{Kind: registrytest.BlobGet, Digest: shard2, Skip: 1, Times: 1, Action: registrytest.Stall(stallAt)},
			text: "shard 2: its second GET stops sending after " + ui.Bytes(stallAt) + " (stall)"},
	}
}

// inject replaces the registry's faults with the plan's and returns
// them, to ask afterwards how often each applied.
func (p faultPlan) inject(reg *registrytest.Registry) []*registrytest.Fault {
	reg.ClearFaults()
	reg.SetBandwidth(0, 0)
	faults := make([]*registrytest.Fault, len(p))
	for i, f := range p {
		if f.perConn > 0 {
			reg.SetBandwidth(f.perConn, 0)
			continue
		}
		faults[i] = reg.Inject(f.rule)
	}
	return faults
}

// clear ends the plan's faults, a stall nobody came back for included.
func clearPlan(reg *registrytest.Registry) {
	reg.ClearFaults()
	reg.SetBandwidth(0, 0)
}

// applied reports how many requests each fault acted on, in plan order;
// -1 for a cap, which acts on every connection.
func applied(faults []*registrytest.Fault) []int {
	n := make([]int, len(faults))
	for i, f := range faults {
		n[i] = -1
		if f != nil {
			n[i] = f.Applied()
		}
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

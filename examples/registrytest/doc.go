// Package registrytest runs a real OCI registry in-process, with faults on
// the wire that tests can script while requests run, and byte counters.
//
// It is a module of its own (github.com/sturdyoci/sturdy/examples/registrytest)
// and does not import sturdy: the client SDK of any registry can test
// itself against it with go get, whatever retry library it uses.
//
// The registry is served on 127.0.0.1 over plain HTTP or, with WithTLS,
// HTTPS with a self-signed certificate that Client and Repository trust.
// Tests use New, which closes the registry in t.Cleanup; main programs (the
// demo, the benchmark) use Start and Close.
//
// # Implementations
//
// WithImplementation picks the registry code; both store blobs in a
// temporary directory and sit behind the same middleware, so faults,
// counters, auth, TLS and bandwidth caps work alike:
//
//   - Distribution (the default): CNCF distribution v3.1.2
//     (registry/handlers.App) on its filesystem driver -- the inmemory
//     driver copies its whole buffer on every write, which makes a 64 MiB
//     upload take ~25 s. Its logging (global logrus) is silenced.
//   - GGCR: go-containerregistry v0.22.1's pkg/registry with its disk blob
//     handler. Upload sessions live in RAM until the PUT whatever the
//     handler, and committed blobs are re-hashed on every HEAD and GET.
//
// Registry.Impl says which one runs, Implementations lists both for
// table-driven tests, and Registry.Capabilities says where they differ in
// what resuming depends on:
// ggcr serves only closed ranges ("bytes=N-" gets 416), has no upload
// status (GET on an upload URL: 400) and no upload DELETE (400), creates a
// session on its first PATCH (POST answers "Range: 0-0" and allocates
// nothing), keeps one blob store for all repositories (no mounts, none
// needed), and reads one upload body at a time under a single lock -- a
// stalled PATCH holds up every other upload. Both refuse a PATCH that does
// not start at the bytes held (416), keep the bytes of a broken PATCH, and
// verify the digest on PUT. Tests in this package pin each of these on the
// real code, so an upgrade that changes one fails there first. Request
// kinds are told apart the same way on both: their upload URLs share the
// shape /v2/<name>/blobs/uploads/<id> (distribution adds ?_state=), so
// Kind-based rules and the release of a stalled upload by the next request
// on its session work on both. net/http's error log is silenced for both;
// ggcr still logs a digest mismatch through the standard log package.
//
// # Faults
//
// Faults are a middleware in front of the registry's handler on the same
// server: there is no proxy hop, so the Host header the client sent is the
// one distribution builds upload Locations from (oras-go refuses a Location
// on another host; ggcr's are relative). The server's listener hands out connections that wrap
// the *net.TCPConn, which is how a reset can be a real TCP RST and how bytes
// are counted on the wire. Only HTTP/1.1 is served, since a fault acts on a
// whole connection.
//
// A Rule picks requests by Kind (BlobGet, UploadPatch, ManifestPut...),
// repository and digest, skips the first Skip matching requests and acts on
// the next Times. Actions:
//
//   - ResetAfter(n): TCP RST after n body bytes, of the response (a blob GET)
//     or of the request (an upload PATCH or PUT; by default the client is
//     reset only after the registry has stored the n bytes it read, see
//     below for cuts as on a real network);
//   - ResetEvery(period): RST at the next multiple of period in the blob's
//     coordinates (from Content-Range), so only a client that resumes
//     finishes;
//   - DropResponse: the registry does the work, the client gets a RST;
//   - Respond(status): 429, 503, 5xx bursts (Times > 1), 401, 403, 404...
//     with Retry-After in seconds or as a date and an OCI error body;
//   - Stall(n): after n body bytes nothing moves, the connection stays open;
//   - Trickle(n, rate): after n bytes, a few bytes per second;
//   - Corrupt(off): one byte inverted at blob offset off;
//   - Truncate(n): clean close after n response body bytes, so the client
//     reads io.ErrUnexpectedEOF;
//   - IgnoreRange: Range is stripped, a ranged GET gets 200 and the whole
//     blob;
//   - Delay(d): the response waits d.
//
// SetBandwidth (or WithBandwidth) caps every connection in either
// direction. Stats reports bytes on the wire per direction, body bytes per
// request kind, requests per kind and status, and the requests a reset cut;
// ResetStats starts over.
//
// # Cuts as on a real network
//
// By default a reset of an upload body is deterministic: the registry reads
// exactly n bytes, stores them, and only then is the client reset, so a
// status query the client sends next already sees them. A dropped link or a
// proxy's reset is not like that: the client sees the RST at once while the
// registry still receives and writes what was in flight, so an immediate
// status query reports a stale, smaller offset and the registry finally
// keeps more than the client knows. WithRealisticCuts(inFlight, lag) models
// it: at the cut the registry takes the body bytes that have reached it (up
// to inFlight, DefaultInFlight = 256 KiB), the client is reset at once, and
// lag later (DefaultCutLag = 100 ms) the handler gets those bytes and then
// its body fails. Distribution answers a status query in the lag with the
// stale offset and accepts a PATCH from it (the late bytes land on the same
// offsets); ggcr, whose lock the cut handler still holds, makes every other
// upload wait and then refuses a PATCH from the stale offset with 416.
// KindStats.LateBodyBytes counts the bytes kept after the client's reset,
// Cuts the requests cut; what the client wrote is counted on the client
// (its socket buffers hold bytes that never arrive). SettleCuts waits until
// every cut handler has returned.
//
// WithTokenAuth adds a minimal bearer token service (tokens expire after a
// TTL) and WithBasicAuth Basic credentials; Repository wires the credentials
// into its oras-go auth client.
//
// Close releases every held connection and waits for the handlers, so that
// goleak.VerifyNone(t, IgnoreLeaks()...) passes after it; IgnoreLeaks names
// the one goroutine distribution itself leaks (ggcr leaks none), and
// IgnoreLeaks(GGCR) leaves it out.
//
// # Pull-through cache
//
// WithPullThrough(origin) makes a registry a pull-through cache of another:
// distribution's own proxy mode (proxy.remoteurl, with proxy.ttl =
// PullThroughTTL), not a fake. The cache is a Registry like any other, with
// its own middleware in front of the proxy (faults, Stats, SetBandwidth,
// auth, TLS, Close), and it fetches from the origin's real listener, so the
// origin's faults and counters see its requests:
//
//	origin := registrytest.New(t)
//	mirror := registrytest.New(t, registrytest.WithPullThrough(origin))
//
// Only Distribution can be a cache (Start fails with GGCR). The origin must
// serve plain HTTP, since distribution fetches through http.DefaultTransport,
// which does not trust its certificate; it may require Basic or token auth
// (the cache logs in with the origin's credentials). Origin returns the
// origin; a cache's Capabilities keeps only the ranges. What the cache
// answers, pinned by tests against distribution v3.1.2:
//
//   - A blob it has not cached is fetched from the origin (a HEAD, then a
//     GET, with /v2/ pings counted as Other) and streamed to the client while
//     it is stored. Range is ignored: a ranged GET, even past the end, gets
//     200 and the whole blob, with neither Content-Range nor Accept-Ranges.
//     Once cached: 206 with Content-Range, and 416 past the end. A client
//     that resumes with Range must take a 200 by skipping what it holds, or
//     start over.
//   - HEAD of an uncached blob makes the cache fetch and store the whole
//     blob; it answers 200 with Content-Length and no Accept-Ranges. Once
//     cached, HEAD says "Accept-Ranges: bytes".
//   - A request for a blob another request is still fetching is streamed
//     from the origin again, whole, and not stored. Distribution tracks the
//     fetches in flight in a map shared by every cache in the process.
//   - A client that goes away mid-blob (a fault on the cache) stops the copy:
//     nothing is cached, and the next request costs the origin the whole
//     blob again.
//   - A cut on the origin mid-blob: the cache has already sent 200 and the
//     blob's Content-Length, so its client reads a short body (unexpected
//     EOF); nothing is cached.
//   - An error from the origin (a 503 on a blob HEAD or GET, or on a manifest
//     by digest) becomes 500 UNKNOWN, the origin's status in the detail and
//     Retry-After lost. On a blob GET the cache has already set the blob's
//     Content-Length, so the error body comes short.
//   - A tag is looked up on the origin on every request (a manifest HEAD),
//     and if the origin fails the cache answers from its own copy: a tag it
//     has cached is served (perhaps stale), one it has not is 404
//     MANIFEST_UNKNOWN -- a transient error at the origin looks permanent.
//     Cached manifests by digest and cached blobs cost the origin nothing.
//   - What the origin lacks is 404: BLOB_UNKNOWN for a blob (also one the
//     origin holds only in another repository), MANIFEST_UNKNOWN for a
//     manifest or tag, even in a repository the origin does not know (no
//     NAME_UNKNOWN).
//   - Uploads, manifest pushes and deletes get 405 UNSUPPORTED.
//
// Close stops distribution's expiry scheduler, so IgnoreLeaks needs nothing
// more for a cache, and drops the idle connections of http.DefaultTransport,
// the only transport distribution's proxy uses. Either registry may be
// closed first, even with a fetch stalled on the origin.
package registrytest

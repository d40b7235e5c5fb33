// Package transfer moves blobs and artifact graphs between oras-go targets
// the caller already has (registries, OCI layouts, memory and file stores)
// and makes the moves finish on bad networks.
//
// [Copy] and [CopyGraph] have oras-go's signatures. [Wrap] makes an existing
// oras.Copy pipeline resilient without rewriting it.
//
// # What a copy does
//
// The graph under the root is walked once; each digest is moved once
// however often it appears. A manifest already in the destination is taken
// as complete with its subgraph (as oras-go does). Blobs move concurrently,
// at most Options.Concurrency at a time, each under its own retry loop
// (package retrypolicy) with a deadline derived from the bytes it still has
// to move; a blob the destination has is skipped, and one that the
// destination registry can mount from Options.MountFrom (or from the source
// repository on the same registry) is mounted.
//
// A failing blob never cancels its siblings: the others run to the end. A
// manifest is pushed, and the root tagged, only after every node under it
// is in the destination. The returned error joins one *BlobError per failed
// node, naming its digest and attempt count, with errors.Is and errors.As
// reaching the causes, plus ErrIncomplete for each manifest held back. A
// cancelled context stops everything and returns an error matching
// context.Canceled; nothing is tagged.
//
// # Resume instead of restart
//
// Downloads from a registry (*remote.Repository) that break are continued
// with a ranged GET from the last byte received, through the repository's
// own client and auth scope. The range is closed (Range: bytes=N-(size-1)):
// sturdy knows the size, and some registries (go-containerregistry's)
// refuse the open-ended form. Only a 206 whose Content-Range starts at N
// and names the blob's size is accepted. A registry that ignores Range
// (200), refuses it (416) or answers it with other bytes (a 206 with a
// wrong Content-Range) is read again from byte 0 and the bytes already
// received are dropped, rather than restarting the destination or failing
// the blob; a progress.Note says so once per blob and the repetition shows
// as wire bytes. Other sources are reopened and
// seeked (oci.Store, file.Store) or read from 0 and dropped. The digest is
// computed over the whole stream across reopens; a mismatch (after a
// resume, or a byte flipped on the way) restarts the blob once from byte 0,
// then fails. Nothing unverified is committed: local stores verify what they
// are given, and a registry verifies the digest of an upload before it
// commits it.
//
// # Many connections per blob
//
// A blob from a registry (or a URLSource) with at least two
// Options.PullRangeSize ranges to fetch (16 MiB by default) is fetched
// over up to Options.PullConnections concurrent ranged GETs, in Copy,
// CopyGraph and a Wrap's Fetch alike: object stores and CDNs cap each
// connection, and one connection leaves most of a fast link idle. Each
// range is a closed Range (bytes=a-b) of its own, accepted only as a 206
// whose Content-Range names exactly that span; redirects (to storage) are
// followed per range, as for one stream. Each range has its own retry
// loop (Options.Retry: backoff, Retry-After, attempts without progress)
// and its own watchdog, and continues from its own last byte after a
// failure: a failing range never cancels its siblings, and the blob fails
// only when one range has used its attempts, with an error naming the
// digest and the range. The destination sees one ordered stream, whatever
// it is (a store's Push, another registry's resumable upload, the reader
// Wrap's Fetch returns); the digest is computed over that stream, and
// Progressed still means the contiguous offset handed on. Retrying and
// Resumed events of one range carry it in progress.Event.Range.
//
// With Options.PullConnections left at 0, more connections are opened only
// where they help. Such a blob's first ranges are read over one
// connection, in requests of 1 and then 2 ranges, straight into the
// destination, and timed until they add up to 200 ms of reading or 3
// ranges: if the reader
// spent at least half of that time waiting on the connection, the link is
// the limit (a per-connection cap, a long path) and the rest is fetched in
// ranges; otherwise the destination is the limit (hashing and writing,
// another registry's upload, a client sharing its cores with the registry
// on loopback) and the rest comes over one connection, because reordering
// ranges in buffers would only add copies. Both outcomes are reported in a
// progress.Note. A split must then pay off: once its reader has read a
// range per connection, it must have delivered 1.25 times the rate one
// connection was measured at, or it takes no more ranges, hands on those
// it took, and goes on over one connection (a Note says so). That catches
// a link capped in total rather than per connection, and a server that
// was slow while it was measured (on loopback, one that shares the
// client's cores). On a capped link the cost is about 200 ms at one
// connection's speed per blob (one range at 32 MiB/s). The decision holds
// for the blob for the rest of the Copy; a read continued after a failure
// is not measured again. With mirrors, it is made on whichever source
// served the measured ranges. PullConnections above 1 always splits, and 1
// never does.
//
// Memory is bounded by a window: at most 2 x PullConnections ranges are
// held (fetched or fetching) ahead of the one being read, so a slow first
// range holds the others back instead of letting them buffer the blob
// (2 x 8 x 8 MiB = 128 MiB per blob with the defaults), and one Copy
// holds at most 2 x MaxPullConnections ranges (256 MiB) and opens at most
// MaxPullConnections ranged connections at once, across its blobs.
//
// A registry that answers the first range with the whole blob (200) is read
// over that one connection, and one that later refuses a range (200, 416, a
// wrong Content-Range) goes on over one connection from where the ordered
// stream stands; both say so in a progress.Note. A 429 or 503 to a range
// halves the connections of that blob for the rest of it (once per burst
// of answers), on top of the wait the server asks for. A registry-to-
// registry copy whose upload breaks re-reads its source from the offset
// the destination holds: the ranges fetched ahead of it are fetched again
// (at most the window). With Options.StateDir, the ranges received are
// kept for a later process (see "Continuing in a later process"). Uploads are one ordered stream: the OCI upload
// protocol is.
//
// # Mirrors, caches and P2P
//
// Options.Mirrors are alternate sources of content by digest: a
// pull-through cache (Harbor proxy-cache project, distribution with
// proxy.remoteurl), a P2P daemon in registry-mirror mode (Dragonfly's
// dfdaemon, Spegel), a shared OCI layout. Every blob, and every manifest
// fetched by digest, is read from the first usable mirror, then the next,
// then the origin (Copy's src); a copy by digest resolves its root on the
// mirrors too, so it goes on while the origin is down. Tags are resolved
// on the origin only, always: a cache may hold a stale tag. A caller who
// wants a mirror's tag resolves it there and copies by digest.
//
// A mirror that lacks a blob (404) passes it to the next source at once,
// with no retry. One that fails passes the blob on from the byte it
// reached: the next source gets a ranged GET from there, so bytes already
// received are not fetched again; when the blob is fetched over several
// connections, each range goes on from its own byte, so ranges of one
// blob may come from different sources. Everything read is verified
// against the digest as from the origin: when a blob's bytes do not
// verify, it is fetched again once from the origin alone, and every mirror
// that served some of it is set aside.
//
// Every connection to a mirror has a watchdog of its own that cuts it after
// half the StallTimeout without a byte (and half the low-speed window), so
// that the read goes on from the next source before the reader's own
// watchdog would end the attempt: switching source never spends an
// attempt or sleeps a backoff. A mirror is set aside for the rest of the
// copy (Wrap: for the wrapped target's life) when it fails without moving
// a byte (refused, 401, 503), stalls or trickles, fails twice, or serves
// wrong bytes: a dead mirror costs one failure and a hung one half a
// StallTimeout, not one per blob. A progress.Note says which and why. A
// mirror's own 429/503 is not waited out: the origin is the next source.
// The origin is never set aside. A root resolved on a mirror must carry
// its manifest's own media type (the digest covers the bytes, not the
// descriptor).
//
// Events carry the source serving the blob (progress.Event.Source,
// "origin" or the mirror's name), Completed the bytes each source served
// (Event.Sources), and the Tracker's summary sums them: how much the
// mirrors saved the origin. sturdy is the resilient client: it does not
// seed, share or schedule content between nodes; the cache or the P2P
// system is the distribution engine.
//
// Uploads to a registry of blobs of 1 MiB and more use the chunked
// protocol: POST, one streamed PATCH per attempt (or Options.ChunkSize
// chunks), PUT ?digest=. Smaller blobs go in one POST and PUT, restarting
// on failure: there is little to resume and a PATCH would be a third
// request per blob. After a failure
// the registry is asked how much it holds (GET on the newest upload
// Location) and the source is re-read from there. A registry may still be
// writing the broken PATCH when it is asked (a cut on a real network
// leaves bytes in flight), so the answer is taken once two answers a
// moment apart agree (25 ms, then doubling, at most 5 s): a PATCH from a
// stale offset would be refused mid-body. A 416 to a later PATCH means the
// registry's offset differs from ours: it is asked again, a moment later.
// A 416 to the first PATCH of a session cannot be about the offset: the
// registry refused the chunk itself (GHCR refuses bodies above 4 MiB), so
// chunks are halved from 64 MiB down to 1 MiB, with a Note. A successful
// PATCH counts every byte it carried; its Range header is not trusted over
// that (ECR's is stale). An offset reported beyond the blob's size is
// refused and a new session starts from 0.
//
// Registries differ here, and each difference degrades, never fails the
// blob: a registry whose upload status query is missing or unhelpful
// (400, 404 without BLOB_UPLOAD_UNKNOWN, 405, 501, a 2xx without a usable
// Range) restarts a broken upload in a new session from byte 0; one that
// refuses chunked uploads (405/501 to POST or PATCH, no Location, or a
// chunk of 1 MiB) gets a monolithic upload with retries, restarting from
// 0. A progress.Note says which. Upload Locations must stay on the
// registry's host and scheme. A digest the registry rejects restarts the
// upload once from byte 0.
//
// Attempt deadlines follow the bytes still to move. On a pull into a store
// (an OCI layout), each reopen of the source is an attempt whose deadline
// covers what is left, so a link slower than the deadline assumes still
// finishes, attempt by attempt; the store's side has no deadline of its
// own, only the watchdog. On an upload each PATCH attempt has the deadline
// of the bytes the registry does not hold yet. A deadline that fires while
// the caller's context is alive is retried like any retryable failure.
//
// MaxAttempts bounds attempts that make no progress: once the committed
// offset has moved forward by Retry.MinProgress (1 MiB by default) since
// the count last restarted, in one attempt or over several, the count and
// the backoff restart. A 256 MiB blob over a link that breaks every 32 MiB
// finishes with MaxAttempts 3, and so does one behind a proxy that closes
// each connection after 500 KiB; a link that never gets past a byte fails
// after MaxAttempts. Each range of a parallel pull counts on its own.
//
// # Continuing in a later process
//
// Options.StateDir (opt-in) keeps, per blob, what the next process needs to
// continue a Copy or CopyGraph, under <StateDir>/blobs/<alg>/<hex>/ (files
// 0600, directories 0700). Everything kept is a hint; the digest is the
// gate.
//
// A pull (any destination, from a network source) writes the bytes it
// hands on to a data file and records their count in meta.json (rewritten
// atomically every 8 MiB or second; data fsync'd every 64 MiB or 5 s and
// when the attempt ends). The next process checks the meta (it parses; its
// version, digest and size match; the data is at least as long as recorded,
// longer data is cut back), hands the kept bytes to the destination from
// disk and fetches the rest from the kept offset. The kept bytes flow into
// the stream whose digest is checked (by the healing reader, or by a
// destination that verifies), so a byte flipped on disk fails the digest:
// every kept byte is then dropped and the blob restarts once from 0, with
// a Note. The hash state is not kept, on purpose: the kept bytes are read
// again for a destination that lost its partial file, hashing them costs
// nothing more, and a trusted hash state would pass a flipped kept byte to
// a destination that does not verify.
//
// Over several connections, the ranges fetched ahead of the prefix are
// kept too: each is written at its offset in the same data file (sparse)
// once received whole, and a range in flight writes what it received every
// MiB and when the read ends (a cancelled copy). meta.json lists the spans
// kept beyond the prefix ("ranges": [[start,end],...]: sorted, apart,
// inside the blob, at most 64; a list that breaks any of this discards the
// state with a Note). The next process reads the prefix and the kept spans
// from disk, in order, into the same verified stream, and fetches only the
// gaps between them (a gap before a kept span as a closed range): no
// ranged GET for a kept byte. A kept span joins the prefix once the prefix
// reaches it. Resumed's Reused counts prefix and spans; a Resumed at the
// end of each kept span beyond the prefix says where the blob goes on. A
// kill now loses what the last checkpoint did not record (at most 8 MiB or
// a second) and what the sockets held, not the window fetched ahead.
//
// A chunked upload to a registry keeps its session's first Location with
// the digest, size and destination repository. The next process asks the
// registry where that session stands (on the registry's host and scheme
// only), takes the answer once two agree, and continues from there. CNCF
// distribution v3 answers the status query of any Location of a live
// session with its offset and a fresh Location (a PATCH must use a
// Location whose _state matches the offset, or it gets 416). A session
// the registry forgot, or cannot report on, starts a new one from 0 with
// a Note. An upload that fails or is cancelled keeps its session (no
// DELETE) for the next process.
//
// Each blob's state is locked with a non-blocking flock, which the kernel
// drops when a process dies: a second copy of a blob in flight (another
// process, or another Copy in this one) copies it without state, with a
// Note. Where flock is not available state is not used. A blob's state is
// removed once it is in the destination; state not updated for 7 days is
// removed when a copy opens the directory. A blob continued from kept
// state emits Resumed with progress.Event.Reused, the bytes that did not
// cross the wire again. Wrap ignores StateDir.
//
// # Stalls and trickles
//
// While bytes are expected to flow, a watchdog cuts an attempt that moved
// nothing for StallTimeout (default 1 min, "stalled") or that averaged less
// than LowSpeedLimit over LowSpeedTime (default 1 KiB/s over 1 min,
// "too slow"). Both are retryable and work on reads and on writes.
//
// Every request sturdy sends to a registry is also watched on its own,
// whatever it is (HEAD, manifest GET and PUT, tag resolution, the POST
// that opens an upload, the status query, PATCH, DELETE): a server that
// sends nothing for StallTimeout while sturdy waits on it, time to the
// response headers included, is cut ("stalled") and the request retried.
// Time spent producing a request body (reading an upload's source) or not
// reading a response (a slow destination) is not the server's. One wait
// is exempt, and bounded: after the body of the request that completes an
// upload (the final PUT, or a monolithic push) a registry verifies the
// digest before it answers; it may stay silent for StallTimeout plus one
// second per 32 MiB of the blob, never longer than the blob's attempt
// deadline.
//
// Each side of a pipe is judged on its own clock. A download is watched
// from its request on, for the time spent waiting on the source (a server
// that never answers has stalled too). The side that consumes it (an
// upload, or a store being written) is watched for the time it spends not
// waiting on the source, backoffs of the source included, so a stalled
// source never makes its destination look stalled; and it is given twice
// StallTimeout, so that a stalled source is cut and healed first. A
// registry that stops reading an upload is cut by its request's own
// watchdog after StallTimeout (time spent reading the source does not
// count); a local store that stops taking bytes after 2 x StallTimeout.
//
// # One retry layer
//
// oras-go's auth.DefaultClient (a repository's client when none is set)
// wraps retry.DefaultClient, which retries GET/HEAD/POST and rewindable
// bodies up to 5 times with Retry-After clamped to 3 s. Under sturdy's
// per-blob loop that would multiply attempts (6 x 6) without the caller
// seeing them, and cut a server's requested wait short. So sturdy talks to
// a *remote.Repository through a copy of it whose *auth.Client has the
// retry.Transport removed (the caller's repository is untouched); every
// request is then attempted, counted and reported once, by sturdy.
// Options.KeepInnerRetries turns this off. Clients of other shapes are used
// as they are: give them no retrying transport, or use [NewClient].
//
// # Differences from oras.Copy
//
// Copy and CopyGraph leave the same descriptors and tags in the
// destination as oras.Copy and oras.CopyGraph (a parity suite in
// examples/e2e checks it over many graph shapes, into memory stores, OCI
// layouts and a registry): foreign (non-distributable) layers are skipped,
// and a root already in the destination is only tagged. Deliberate
// differences: a tag must resolve to a manifest or an index
// (ErrNotManifest; oras.Copy would copy a blob a tag points at), and a
// blob is mounted from the source repository when both are on the same
// registry. oras-go's CopyGraphOptions have no equivalent in Options:
// FindSuccessors (content.Successors is used), PreCopy and SkipNode,
// PostCopy, OnCopySkipped and OnMounted (the Started, Completed, Skipped
// and Mounted events say what happened, after the fact), MountFrom as a
// function (Options.MountFrom is a list), MapRoot and CopyOptions'
// platform selection (the whole resolved root is copied). A pipeline that
// needs them keeps oras.Copy and passes Wrap'ped targets: oras-go still
// runs them.
//
// # Hostile servers
//
// What sturdy guarantees against a registry, proxy or storage back end
// that lies:
//
//   - Every digest, from the caller or from any manifest read, is validated
//     before it reaches a URL, a file name or a store: an algorithm sturdy
//     cannot compute (sha999), an encoded part that is not hex of the
//     right length, or path text ("sha256:../../manifests/v1") is a
//     permanent error (errdef.ErrInvalidDigest) naming the descriptor,
//     never an unverified transfer. sha256 and sha512 are verified.
//   - Nothing unverified is committed: the digest and size of every blob
//     are checked over the whole stream, across resumes; a mismatch
//     restarts once from byte 0, then fails.
//   - A tag must resolve to a manifest or an index: a captive portal
//     answering 200 text/html is ErrNotManifest, in Copy and behind Wrap.
//   - Memory is bounded: manifests above MaxMetadataBytes and error bodies
//     above 64 KiB are not read.
//   - No silence lasts longer than StallTimeout (the bounded commit wait
//     above excepted); a cancelled Copy returns within a second whatever
//     the server does (an upload session's DELETE gets 300 ms after a
//     cancel, 2 s otherwise; a registry collects abandoned sessions).
//   - Retry-After is honoured up to Retry.MaxRetryAfter, however large or
//     malformed the server's value.
//   - Upload Locations stay on the registry's host and scheme, and
//     credentials never follow a redirect to another host (oras-go's
//     auth.Client drops them).
//
// # Errors
//
// Errors name the digest of the blob ("manifest sha256:..." for manifests)
// and never carry secrets in their text: one redaction policy (every query
// value of a URL is secret unless it is a protocol parameter known
// harmless: digest, mount, from, n, last; user info is removed) applies to
// every error text, event, log line and RetryInfo, on by default. errors.Is
// and errors.As still reach the original errors; what they reach is
// redacted where sturdy creates or can rewrite it: a *url.Error from any
// request sturdy sends (the URL of a redirected storage request included)
// has its URL redacted in place, and retrypolicy.StatusError holds a
// redacted URL. An *errcode.ErrorResponse that oras-go builds for its own
// requests keeps its *url.URL whole: a caller that prints that field
// itself prints what the registry URL held (upload _state included).
package transfer

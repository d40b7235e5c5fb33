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
// with a ranged GET from the last byte received (Range: bytes=N-), through
// the repository's own client and auth scope. Only a 206 whose
// Content-Range starts at N and names the blob's size is accepted. A
// registry that ignores Range (200) is read again from byte 0 and the bytes
// already received are dropped, rather than restarting the destination;
// the repetition shows as wire bytes. Other sources are reopened and
// seeked (oci.Store, file.Store) or read from 0 and dropped. The digest is
// computed over the whole stream across reopens; a mismatch (after a
// resume, or a byte flipped on the way) restarts the blob once from byte 0,
// then fails. Nothing unverified is committed: local stores verify what they
// are given, and a registry verifies the digest of an upload before it
// commits it.
//
// Uploads to a registry of blobs of 1 MiB and more use the chunked
// protocol: POST, one streamed PATCH per attempt (or Options.ChunkSize
// chunks), PUT ?digest=. Smaller blobs go in one POST and PUT, restarting
// on failure: there is little to resume and a PATCH would be a third
// request per blob. After a failure
// the registry is asked how much it holds (GET on the newest upload
// Location) and the source is re-read from there. A 416 means the
// registry's offset differs from ours: it is asked again, a moment later,
// since a registry may record a broken PATCH only when its handler returns.
// Upload Locations must stay on the registry's host and scheme. A registry
// that refuses chunked uploads or cannot report an offset gets a monolithic
// upload with retries, restarting from 0, and a progress.Note says so. A
// digest the registry rejects restarts the upload once from byte 0.
//
// Attempt deadlines follow the bytes still to move. On a pull into a store
// (an OCI layout), each reopen of the source is an attempt whose deadline
// covers what is left, so a link slower than the deadline assumes still
// finishes, attempt by attempt; the store's side has no deadline of its
// own, only the watchdog. On an upload each PATCH attempt has the deadline
// of the bytes the registry does not hold yet. A deadline that fires while
// the caller's context is alive is retried like any retryable failure.
//
// MaxAttempts bounds attempts that make no progress: an attempt that moved
// the committed offset forward by at least Retry.MinProgress (1 MiB by
// default) resets the count and the backoff. A 256 MiB blob over a link
// that breaks every 32 MiB finishes with MaxAttempts 3; a link that never
// gets past a byte fails after MaxAttempts.
//
// # Stalls and trickles
//
// While bytes are expected to flow, a watchdog cuts an attempt that moved
// nothing for StallTimeout (default 1 min, "stalled") or that averaged less
// than LowSpeedLimit over LowSpeedTime (default 1 KiB/s over 1 min,
// "too slow"). Both are retryable and work on reads and on writes. The
// final PUT of an upload is not watched: a registry may take minutes to
// verify a large blob; it is bounded by the attempt deadline.
//
// Each side of a pipe is judged on its own clock. A download is watched
// from its request on, for the time spent waiting on the source (a server
// that never answers has stalled too). The side that consumes it (an
// upload, or a store being written) is watched for the time it spends not
// waiting on the source, backoffs of the source included, so a stalled
// source never makes its destination look stalled; and it is given twice
// StallTimeout, so that a stalled source is cut and healed first. A
// registry that stops reading an upload is therefore cut after
// 2 x StallTimeout.
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
// # Errors
//
// Errors name the digest of the blob and never carry upload _state tokens
// or pre-signed URL credentials: their text is redacted, while errors.Is
// and errors.As still reach the original errors.
package transfer

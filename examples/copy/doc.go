// Copy copies an artifact between registries and OCI layouts on disk with
// sturdy, drawing a progress bar per blob (one log line per event when
// stdout is not a terminal).
//
//	go -C examples run ./copy [flags] SRC DST
//	go -C examples run ./copy registry.example.com/models/llama:v1 oci-layout:/data/llama:v1
//	go -C examples run ./copy --plain-http oci-layout:./llama:v1 localhost:5000/models/llama:v1
//
// SRC and DST are registry references (host/repo:tag, host/repo@digest) or
// oci-layout:PATH[:tag|@digest]. Credentials come from the Docker config
// through oras-go's credentials package (--registry-config for another
// file); --plain-http talks HTTP. Each blob is moved under its own retry
// loop: downloads resume with ranged GETs, uploads with the chunked
// protocol from the registry's offset, a stalled connection is cut after
// --stall-timeout, and a failing blob does not cancel the others.
// --max-attempts bounds attempts without progress, --initial-backoff the
// first wait, --concurrency the blobs moved at once.
//
// --state-dir DIR keeps what each blob's transfer needs to continue after
// the process dies (a kill, a reboot, Ctrl-C): the bytes a download
// received, an upload's session. Run the same command again with the same
// --state-dir and it continues where it stopped; the summary shows the
// bytes "reused from kept state". The directory holds at most the blobs
// in flight and empties as they complete.
//
// It prints the transfer summary (payload against bytes on the wire,
// retries, resumes) and exits 0 on success, 1 when the copy failed
// (stderr names each failed blob's digest), 2 on bad arguments.
package main

// Demo pushes and pulls a model-like artifact through a real registry with
// faults on the wire, and shows sturdy finishing where plain oras-go
// stops.
//
// With no flags and no network it:
//
//   - writes a ~1 GiB model (config.json, generation_config.json,
//     tokenizer.json and three safetensors shards) from a deterministic
//     ChaCha8 stream into a temporary directory, streaming, and opens it
//     with oras-go's file.Store;
//   - starts an in-process CNCF distribution registry (registrytest,
//     filesystem storage) whose wire resets every blob transfer at each
//     32 MiB boundary of the blob, answers a burst of requests with 503 and
//     Retry-After, and stalls one upload and one download;
//   - pushes the model with transfer.Copy (chunked upload, resumed from the
//     registry's offset after each reset), pulls it back with
//     transfer.Copy into an OCI layout (ranged GETs from the last byte
//     received), and re-hashes every blob of the layout;
//   - prints, per phase, sturdy's progress.Tracker summary (payload against
//     bytes on the wire, retries, resumes, elapsed) and the registry's own
//     counters.
//
// On a terminal each blob gets a progress bar with its state and last
// retry reason; otherwise (make demo > log) one line per event.
//
// Flags: -size (1GiB; units accepted), -faults=false for a clean link,
// -reset-every (32MiB), -stall-timeout (3s), -concurrency, -keep to keep the
// temporary directory, and -compare to run the same push and pull with
// plain oras.Copy through oras-go's default client and report how far it
// got, its bytes on the wire and its time against sturdy's. The exit code
// is non-zero when sturdy's transfer or the verification fails.
//
//	make demo
//	go -C examples run ./demo -size 256MiB -compare
package main

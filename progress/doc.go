// Package progress tells a UI or a log what a transfer is doing.
//
// The transfer package emits an [Event] for each thing that happens to a
// blob: it started, moved forward, failed an attempt and will retry,
// resumed from an offset, was already there, was mounted, completed or
// failed for good. An [Observer] receives them. This package provides the
// event types and three observers: [Log] writes to a log/slog logger,
// [Tracker] aggregates events into per-blob and total state for a progress
// display and an end-of-run [Summary], and [Multi] feeds several observers
// at once. [Func] turns a function into an Observer.
//
// # Events of one blob
//
// The events of one blob arrive in this order:
//
//	Started -> Progressed* -> (Retrying -> [Resumed] -> Progressed*)* -> Completed | Failed
//
// A blob the destination already has, or that the registry mounts from
// another repository, gets a single Skipped or Mounted event instead. An
// attempt after Retrying that is not announced by Resumed starts again from
// offset 0. Note events may come at any point; they carry a message in
// Reason and change no state.
//
// Progressed events are throttled by the emitter: about one per MiB and at
// most about 10 per second per blob, plus a final one when the blob's bytes
// are all committed. Observers get at most that many; they must not assume
// to see every offset.
//
// # Concurrency
//
// The emitter may call OnEvent concurrently from different blobs'
// goroutines; the events of one blob (one digest) are delivered in order and
// never concurrently with each other. Observers must therefore be safe for
// concurrent use across blobs; everything this package provides is. OnEvent
// must not block for long: it runs on the transfer's goroutine.
//
// # Bytes
//
// Offset counts payload bytes committed (uploads) or verified (downloads);
// Wire counts bytes that crossed the network, including bytes sent again
// after a restart. Their ratio is what a flaky link costs: a transfer that
// resumes stays near 1x, one that restarts from 0 does not.
package progress

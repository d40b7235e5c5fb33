package progress

import (
	"context"
	"log/slog"

	"github.com/opencontainers/go-digest"
)

// Attribute keys written by the Log observer. They are part of the API:
// log queries and alerts may depend on them.
const (
	KeyDigest  = "digest"  // short digest, "sha256:" and the first 12 hex digits
	KeySize    = "size"    // Desc.Size in bytes
	KeyAttempt = "attempt" // 1-based attempt number
	KeyReason  = "reason"  // Event.Reason
	KeyOp      = "op"      // Event.Op
	KeyBackoff = "backoff" // Event.Backoff, a time.Duration
	KeyOffset  = "offset"  // Event.Offset in bytes
	KeyRange   = "range"   // Event.Range, "bytes a-b", only when not zero
	KeySource  = "source"  // Event.Source, only when set (a copy with mirrors)
	KeyWire    = "wire"    // Event.Wire in bytes, only when the emitter counted
	KeyErr     = "err"     // Event.Err
)

// Log returns an Observer that writes events to logger, at a level that
// matches how much a person running the transfer needs to know:
//
//	Retrying                  Warn   digest size attempt op reason backoff offset range wire err
//	Failed                    Error  digest size attempt reason offset wire err
//	Resumed                   Info   digest size attempt offset range reason
//	Mounted                   Info   digest size reason
//	Note                      Info   digest size attempt reason (digest, size and attempt when known)
//	Started                   Debug  digest size attempt
//	Completed                 Debug  digest size attempt wire
//	Skipped                   Debug  digest size reason
//	Progressed                never: a progress bar is the place for it
//
// The message is "blob " followed by the kind ("blob retrying"), or "note"
// for a Note. Empty reasons, nil errors and unset wire counts are left out;
// with mirrors, every kind but Started and Skipped also has the source.
// A nil logger means slog.Default() at the time of each event.
func Log(logger *slog.Logger) Observer {
	return logObserver{logger: logger}
}

type logObserver struct {
	logger *slog.Logger
}

func (o logObserver) OnEvent(e Event) {
	var level slog.Level
	switch e.Kind {
	case Retrying:
		level = slog.LevelWarn
	case Failed:
		level = slog.LevelError
	case Resumed, Mounted, Note:
		level = slog.LevelInfo
	case Started, Completed, Skipped:
		level = slog.LevelDebug
	default: // Progressed and invalid kinds
		return
	}
	logger := o.logger
	if logger == nil {
		logger = slog.Default()
	}
	ctx := context.Background()
	// Building attributes costs allocations on the transfer's goroutine;
	// skip them when nobody listens at this level.
	if !logger.Enabled(ctx, level) {
		return
	}

	attrs := make([]slog.Attr, 0, 8)
	if e.Desc.Digest != "" {
		attrs = append(attrs, slog.String(KeyDigest, shortDigest(e.Desc.Digest)))
	}
	if e.Desc.Digest != "" || e.Desc.Size != 0 {
		attrs = append(attrs, slog.Int64(KeySize, e.Desc.Size))
	}
	if e.Source != "" && e.Kind != Started && e.Kind != Skipped {
		attrs = append(attrs, slog.String(KeySource, e.Source))
	}
	switch e.Kind {
	case Retrying:
		attrs = appendAttempt(attrs, e)
		if e.Op != "" {
			attrs = append(attrs, slog.String(KeyOp, e.Op))
		}
		attrs = appendReason(attrs, e)
		attrs = append(attrs, slog.Duration(KeyBackoff, e.Backoff), slog.Int64(KeyOffset, e.Offset))
		attrs = appendRange(attrs, e)
		attrs = appendWire(attrs, e)
		attrs = appendErr(attrs, e)
	case Failed:
		attrs = appendAttempt(attrs, e)
		attrs = appendReason(attrs, e)
		attrs = append(attrs, slog.Int64(KeyOffset, e.Offset))
		attrs = appendWire(attrs, e)
		attrs = appendErr(attrs, e)
	case Resumed:
		attrs = appendAttempt(attrs, e)
		attrs = append(attrs, slog.Int64(KeyOffset, e.Offset))
		attrs = appendRange(attrs, e)
		attrs = appendReason(attrs, e)
	case Note:
		attrs = appendAttempt(attrs, e)
		attrs = appendReason(attrs, e)
	case Started:
		attrs = appendAttempt(attrs, e)
	case Completed:
		attrs = appendAttempt(attrs, e)
		attrs = appendWire(attrs, e)
	case Skipped, Mounted:
		attrs = appendReason(attrs, e)
	}

	msg := "blob " + e.Kind.String()
	if e.Kind == Note {
		msg = "note"
	}
	logger.LogAttrs(ctx, level, msg, attrs...)
}

func appendRange(attrs []slog.Attr, e Event) []slog.Attr {
	if e.Range.IsZero() {
		return attrs
	}
	return append(attrs, slog.String(KeyRange, e.Range.String()))
}

func appendAttempt(attrs []slog.Attr, e Event) []slog.Attr {
	if e.Attempt == 0 {
		return attrs
	}
	return append(attrs, slog.Int(KeyAttempt, e.Attempt))
}

func appendReason(attrs []slog.Attr, e Event) []slog.Attr {
	if e.Reason == "" {
		return attrs
	}
	return append(attrs, slog.String(KeyReason, e.Reason))
}

func appendWire(attrs []slog.Attr, e Event) []slog.Attr {
	if e.Wire == 0 {
		return attrs
	}
	return append(attrs, slog.Int64(KeyWire, e.Wire))
}

func appendErr(attrs []slog.Attr, e Event) []slog.Attr {
	if e.Err == nil {
		return attrs
	}
	return append(attrs, slog.Any(KeyErr, e.Err))
}

// shortDigest keeps the algorithm and 12 hex digits: enough to tell blobs
// of one artifact apart in a log, short enough to read.
func shortDigest(d digest.Digest) string {
	const keep = 12
	s := string(d)
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			if len(s)-i-1 > keep {
				return s[:i+1+keep]
			}
			return s
		}
	}
	if len(s) > keep {
		return s[:keep]
	}
	return s
}

package transfer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Defaults for the zero Options.
const (
	// DefaultConcurrency is the number of blobs moved at once.
	DefaultConcurrency = 4
	// DefaultStallTimeout cuts an attempt that moved no byte for this long.
	DefaultStallTimeout = time.Minute
	// DefaultLowSpeedLimit and DefaultLowSpeedTime cut an attempt that
	// moved fewer than 1 KiB/s averaged over a minute (curl's
	// --speed-limit/--speed-time idea): a trickle that a zero-progress rule
	// never catches, set low enough that no working link trips it.
	DefaultLowSpeedLimit int64 = 1 << 10
	DefaultLowSpeedTime        = time.Minute
	// DefaultPullConnections, DefaultMaxPullConnections and
	// DefaultPullRangeSize: a large blob from a registry whose link caps
	// each connection is fetched over up to 8 connections in ranges of
	// 8 MiB, and one Copy opens at most 16 such connections at once. See
	// Options.PullConnections.
	DefaultPullConnections          = 8
	DefaultMaxPullConnections       = 16
	DefaultPullRangeSize      int64 = 8 << 20
	// DefaultMaxMetadataBytes bounds a manifest or index read into memory,
	// as oras-go does.
	DefaultMaxMetadataBytes int64 = 4 << 20
)

// Options configure Copy, CopyGraph and Wrap. The zero value is usable.
//
// One rule for every number: 0 means the default; a negative value means
// "off" where off makes sense (StallTimeout, LowSpeedLimit) and is invalid
// elsewhere (Validate says which).
type Options struct {
	// Retry is the per-blob retry policy. Each blob gets its own loop;
	// Retry.OnRetry, if set, is called for every blob (concurrently across
	// blobs).
	Retry retrypolicy.Config
	// Concurrency bounds the blobs moved at once; 0 means
	// DefaultConcurrency.
	Concurrency int
	// Observer receives progress events; nil means none. See package
	// progress for the order and concurrency of events.
	Observer progress.Observer
	// StallTimeout cuts an attempt during which no byte moved for this
	// long, and retries it ("stalled"). It also bounds the silence of
	// every request to a registry, time to response headers included
	// (the final PUT of an upload may wait longer while the registry
	// verifies; see the package doc). 0 means DefaultStallTimeout; < 0
	// disables both. Time spent waiting on the source never counts
	// against the destination: a registry that stops reading an upload is
	// cut after StallTimeout, a local store that stops taking bytes after
	// twice this, so that a stalled source is healed first.
	StallTimeout time.Duration
	// LowSpeedLimit (bytes/s) and LowSpeedTime cut an attempt whose rate
	// stayed below the limit for the whole window ("too slow"). 0 means the
	// defaults; LowSpeedLimit < 0 disables the check.
	LowSpeedLimit int64
	LowSpeedTime  time.Duration
	// MountFrom names repositories on the destination registry to try a
	// cross-repository mount from before uploading a blob. When source and
	// destination are repositories on the same registry, the source
	// repository is tried first without being listed. Names that are not
	// valid repository names are skipped.
	MountFrom []string
	// MaxMetadataBytes bounds a manifest read into memory; 0 means
	// DefaultMaxMetadataBytes.
	MaxMetadataBytes int64
	// ChunkSize caps the bytes sent in one PATCH of a chunked upload, for
	// proxies that limit request bodies. 0 streams the rest of the blob in
	// one PATCH per attempt. A registry's OCI-Chunk-Min-Length raises it.
	ChunkSize int64
	// PullConnections is how many connections one blob read from a
	// registry (or a URLSource) is fetched over: a blob of at least two
	// PullRangeSize ranges is split into ranges fetched by concurrent
	// ranged GETs, each continuing from its own last byte under its own
	// retry loop, and handed to the destination as one ordered stream,
	// verified as a whole. 0 means up to DefaultPullConnections where the
	// link, not the destination, is the limit: a blob's first ranges come
	// over one connection, timed, and the rest is split only if the reader
	// waited on them at least half the time (see the package doc, "Many
	// connections per blob"). N > 1 always splits over N; 1 fetches every
	// blob over one connection. A registry that answers 429 or 503 to a
	// range gets half as many connections for the rest of that blob; one
	// that ignores Range gets one stream (with a progress.Note). Uploads
	// are always one ordered stream: the OCI upload protocol is.
	//
	// Memory: a blob holds at most 2 x PullConnections ranges in memory
	// (fetched ahead of the one the destination is reading), and one Copy
	// at most 2 x MaxPullConnections, whatever the blob's size: 128 MiB
	// per blob and 256 MiB per Copy with the defaults.
	PullConnections int
	// MaxPullConnections bounds the ranged connections open at once
	// across one Copy, CopyGraph or Wrap; 0 means
	// DefaultMaxPullConnections. Blobs fetched over one connection are
	// bounded by Concurrency instead.
	//
	// A transport keeps few idle connections per host by default
	// (http.Transport's MaxIdleConnsPerHost: 2), and a parallel pull then
	// opens a new connection for most ranges. sturdy gives a repository
	// whose client would use http.DefaultTransport a clone of it with a
	// larger idle pool; a caller's own *http.Transport should set
	// MaxIdleConnsPerHost to MaxPullConnections or more.
	MaxPullConnections int
	// PullRangeSize is the size of one range; 0 means
	// DefaultPullRangeSize.
	PullRangeSize int64
	// Mirrors are alternate sources of content by digest, tried in order
	// before the source itself (the origin) for every blob and every
	// manifest fetched by digest; see Mirror and the package doc. Tags
	// are resolved on the origin only. Mirrors of a Wrap serve its Fetch.
	Mirrors []Mirror
	// Monolithic turns chunked uploads off: blobs are pushed with one PUT
	// per attempt, restarting from byte 0 after a failure.
	Monolithic bool
	// KeepInnerRetries keeps oras-go's retrying transport (retry.Transport,
	// part of auth.DefaultClient) under a *remote.Repository's client.
	// By default sturdy talks to the registry through a copy of the
	// repository whose client has it removed, so that one retry layer
	// decides, counts and reports every attempt: otherwise each of
	// sturdy's attempts is up to six requests, and a 429's Retry-After is
	// clamped to 3 s underneath. The caller's repository is not modified.
	KeepInnerRetries bool
	// StateDir, if set, keeps what a blob's transfer needs to continue in
	// a later process (after a kill, a reboot, a Ctrl-C) under this
	// directory, created 0700 if missing: for a pull, the bytes received
	// so far (the prefix from byte 0, and the ranges a parallel read
	// fetched ahead of it, at their offsets); for a chunked upload to a registry,
	// the upload session. The next Copy or CopyGraph of the same blob
	// hands the kept bytes on from disk and fetches the rest with a
	// ranged GET, or asks the registry where the session stands and sends
	// the rest. Nothing kept is trusted: the blob's digest is still
	// verified over the whole stream. Disk use is bounded by the blobs in
	// flight (at most their sizes); a blob's state is removed once it is
	// in the destination, and state not updated for statedir.StaleAfter
	// (7 days) is removed when a copy opens the directory. Blobs under
	// 1 MiB and manifests are not kept. Wrap ignores it: the reader a
	// Wrap's Push is given belongs to its caller. "" (the default) keeps
	// nothing. See the package doc.
	StateDir string
	// Logger, if set, logs retries, resumes and failures (see
	// progress.Log) in addition to Observer.
	Logger *slog.Logger
}

// ErrInvalidOptions is wrapped by the error of Validate, and so of Copy,
// CopyGraph and every operation of a Wrap with invalid Options.
var ErrInvalidOptions = errors.New("transfer: invalid options")

// Validate reports the first invalid field, wrapped in ErrInvalidOptions
// (Retry's own errors wrap retrypolicy.ErrInvalidConfig too).
func (o Options) Validate() error {
	if err := o.Retry.Validate(); err != nil {
		return fmt.Errorf("%w: Retry: %w", ErrInvalidOptions, err)
	}
	for i, m := range o.Mirrors {
		if m.Target == nil {
			return fmt.Errorf("%w: Mirrors[%d] has no Target", ErrInvalidOptions, i)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Concurrency", int64(o.Concurrency)},
		{"LowSpeedTime", int64(o.LowSpeedTime)},
		{"MaxMetadataBytes", o.MaxMetadataBytes},
		{"ChunkSize", o.ChunkSize},
		{"PullConnections", int64(o.PullConnections)},
		{"MaxPullConnections", int64(o.MaxPullConnections)},
		{"PullRangeSize", o.PullRangeSize},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s is negative (%d); 0 means the default", ErrInvalidOptions, f.name, f.v)
		}
	}
	return nil
}

func (o Options) concurrency() int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	return DefaultConcurrency
}

func (o Options) maxMetadataBytes() int64 {
	if o.MaxMetadataBytes > 0 {
		return o.MaxMetadataBytes
	}
	return DefaultMaxMetadataBytes
}

func (o Options) observer() progress.Observer {
	if o.Logger != nil {
		return progress.Multi(o.Observer, progress.Log(o.Logger))
	}
	return progress.Multi(o.Observer)
}

// watchdogConfig resolves the stall and low-speed settings.
func (o Options) watchdogConfig() watchdogConfig {
	w := watchdogConfig{stall: o.StallTimeout, lowLimit: o.LowSpeedLimit, lowTime: o.LowSpeedTime}
	if w.stall == 0 {
		w.stall = DefaultStallTimeout
	}
	if w.lowLimit == 0 {
		w.lowLimit = DefaultLowSpeedLimit
	}
	if w.lowTime <= 0 {
		w.lowTime = DefaultLowSpeedTime
	}
	return w
}

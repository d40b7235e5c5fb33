package transfer

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Operations named in retrypolicy.RetryInfo.Op and progress.Event.Op.
const (
	opResolve      = "resolve"
	opExists       = "exists"
	opMount        = "mount"
	opFetch        = "fetch"
	opPush         = "push"
	opTag          = "tag"
	opPredecessors = "predecessors"
	opDelete       = "delete"
)

// policy is opts.Retry for one operation. Every retry is visible: it is
// reported as a Retrying event of the blob or manifest (ev, when there is
// one) and to the caller's OnRetry, both naming the operation and the
// descriptor, with the error redacted as everywhere.
func policy(opts Options, op string, ev *blobEvents) retrypolicy.Config {
	cfg := opts.Retry
	user := cfg.OnRetry
	if ev == nil {
		// An operation on no descriptor yet (a tag's resolution): its
		// retries are events too, with a zero Desc, so that a Logger
		// shows them.
		ev = newBlobEvents(opts.observer(), ocispec.Descriptor{})
	}
	cfg.OnRetry = func(ri retrypolicy.RetryInfo) {
		ri.Err = redacted(ri.Err)
		ri.Op = op
		ri.Desc = ev.desc
		ev.retrying(ri, progress.Range{})
		if user != nil {
			user(ri)
		}
	}
	return cfg
}

// doMetadata runs a small request (HEAD, manifest, tag) under the policy,
// with the server's Retry-After attached to its errors.
func doMetadata(ctx context.Context, opts Options, op string, ev *blobEvents, size int64, fn func(context.Context) error) error {
	return retrypolicy.Do(ctx, policy(opts, op, ev), size, func(ctx context.Context) error {
		ctx, slot := captureRetryAfter(ctx)
		return slot.attach(fn(ctx))
	})
}

package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sturdyoci/sturdy/internal/httpblob"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Wrap returns t with sturdy's behaviour, for a pipeline that already calls
// oras.Copy or oras.CopyGraph: pass the wrapped targets in place of the
// originals and nothing else changes.
//
//   - Fetch of a blob returns a reader that heals itself: a broken or
//     stalled connection is reopened where it stopped (a ranged GET on a
//     registry), under opts.Retry, and the digest is checked over the whole
//     stream. Manifests are fetched whole under the retry policy.
//   - Push to a registry uses the resumable chunked upload; it resumes from
//     the registry's offset when the content can be re-read from there (a
//     reader from a wrapped source, or one that seeks). Pushes to other
//     targets are retried when the content can be re-read from the start.
//   - Exists, Resolve, Tag, FetchReference, PushReference and Mount are
//     retried under the policy; errdef.ErrAlreadyExists and ErrNotFound
//     pass through unchanged (they are permanent). A mount the registry
//     declines is pushed through the resumable upload, not oras-go's
//     monolithic fallback.
//   - Every digest is validated first, and a reference must resolve to a
//     manifest (ErrNotManifest otherwise). Fetch and Push errors are
//     *BlobError naming the descriptor.
//
// The optional interfaces oras-go type-asserts are kept: the result
// implements registry.ReferenceFetcher, registry.ReferencePusher,
// registry.Mounter and content.PredecessorFinder exactly when t does, in
// every combination, so oras.Copy takes the same paths. The Wrap of a
// *remote.Repository also keeps registry.ReferrerLister,
// registry.TagLister, content.Deleter and its ParseReference (which
// oras.Tag uses); listings are passed through without retries, so that a
// callback never sees a page twice.
//
// Invalid opts (see Options.Validate) make every operation fail with
// their error.
//
// oras.Copy still runs its nodes in an errgroup that cancels siblings on
// the first error; Wrap makes that first error rare, Copy removes it.
func Wrap(t oras.Target, opts Options) oras.Target {
	if t == nil {
		return nil
	}
	w := &wrapped{t: rewireTarget(unwrapTarget(t).(oras.Target), opts), opts: opts, invalid: opts.Validate()}
	w.mover = newBlobMover(w.t, w.t, opts)
	if _, ok := w.t.(*remote.Repository); ok {
		return &wrappedRepository{w, rfImpl{w}, rpImpl{w}, moImpl{w}, pfImpl{w}}
	}
	var mask int
	if _, ok := w.t.(registry.ReferenceFetcher); ok {
		mask |= hasRF
	}
	if _, ok := w.t.(registry.ReferencePusher); ok {
		mask |= hasRP
	}
	if _, ok := w.t.(registry.Mounter); ok {
		mask |= hasMO
	}
	if _, ok := w.t.(content.PredecessorFinder); ok {
		mask |= hasPF
	}
	return compose(w, mask)
}

// unwrapTarget returns the target under a Wrap, so sturdy never runs its
// loops twice over the same request.
func unwrapTarget(t any) any {
	for {
		w, ok := t.(interface{ wrappedTarget() oras.Target })
		if !ok {
			return t
		}
		t = w.wrappedTarget()
	}
}

type wrapped struct {
	t       oras.Target
	opts    Options
	invalid error      // opts.Validate(): every operation returns it
	mover   *blobMover // its source reads w.t, its destination is w.t
}

func (w *wrapped) wrappedTarget() oras.Target { return w.t }

// do runs op under the policy; desc, when not zero, is what op concerns,
// and its retries are reported as its events.
func (w *wrapped) do(ctx context.Context, op string, desc ocispec.Descriptor, fn func(context.Context) error) error {
	if w.invalid != nil {
		return w.invalid
	}
	var ev *blobEvents
	if desc.Digest != "" {
		ev = newBlobEvents(w.mover.opts.Observer, desc)
	}
	return redacted(doMetadata(ctx, w.opts, op, ev, desc.Size, fn))
}

// Fetch implements content.Fetcher.
func (w *wrapped) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if w.invalid != nil {
		return nil, w.invalid
	}
	if err := httpblob.ValidateDigest(desc); err != nil {
		return nil, blobError(desc, fromSource(err))
	}
	if isManifest(desc) {
		raw, err := readManifest(ctx, w.opts, w.mover.manifestFetcher(w.t), desc, newBlobEvents(w.mover.opts.Observer, desc))
		if err != nil {
			return nil, blobError(desc, fromSource(redacted(err)))
		}
		return io.NopCloser(bytes.NewReader(raw)), nil
	}
	return openFetched(ctx, desc, w.mover.src, w.mover.opts)
}

// openFetched returns a healing reader of desc from src for a caller,
// opened at once, so that a blob that is not there fails here, where
// oras-go expects it, and not on the first Read. opts.Observer already
// includes the Logger.
func openFetched(ctx context.Context, desc ocispec.Descriptor, src source, opts Options) (io.ReadCloser, error) {
	ev := newBlobEvents(opts.Observer, desc)
	ret, err := retrypolicy.NewRetrier(policy(opts, opFetch, ev), desc.Size)
	if err != nil {
		return nil, err
	}
	hr := newHealingReader(ctx, desc, src, ret, opts.watchdogConfig(), ev, 0)
	if err := hr.prime(); err != nil {
		hr.Close()
		if re, ok := finalReaderError(err); ok {
			err = re
		}
		return nil, blobError(desc, fromSource(redacted(err)))
	}
	return &fetchedBlob{hr: hr}, nil
}

// fetchedBlob is the healing reader handed to a caller; it strips the
// reader's internal error marker.
type fetchedBlob struct{ hr *healingReader }

func (f *fetchedBlob) Read(p []byte) (int, error) {
	n, err := f.hr.Read(p)
	if re, ok := finalReaderError(err); ok {
		err = blobError(f.hr.desc, fromSource(redacted(re)))
	}
	return n, err
}

func (f *fetchedBlob) Close() error { return f.hr.Close() }

// Push implements content.Pusher.
//
// Its errors are *BlobError naming the descriptor, as Copy's are;
// errors.Is still reaches errdef.ErrAlreadyExists and the other causes.
func (w *wrapped) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if w.invalid != nil {
		return w.invalid
	}
	if err := httpblob.ValidateDigest(desc); err != nil {
		return blobError(desc, err)
	}
	if isManifest(desc) {
		if err := checkManifestSize(w.opts, desc); err != nil {
			return blobError(desc, err)
		}
		raw, err := content.ReadAll(r, desc)
		if err != nil {
			return blobError(desc, err)
		}
		return blobError(desc, w.do(ctx, opPush, desc, func(ctx context.Context) error {
			return w.t.Push(ctx, desc, bytes.NewReader(raw))
		}))
	}
	ev := newBlobEvents(w.mover.opts.Observer, desc)
	m := *w.mover
	m.src = readerSource(r)
	if err := m.send(ctx, desc, ev); err != nil {
		ev.failed(w.opts.Retry.Verdict(err).Reason, err)
		return blobError(desc, redacted(err))
	}
	return nil
}

// Exists implements content.Storage.
func (w *wrapped) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if err := httpblob.ValidateDigest(desc); err != nil {
		return false, err
	}
	var ok bool
	err := w.do(ctx, opExists, desc, func(ctx context.Context) error {
		var err error
		ok, err = w.t.Exists(ctx, desc)
		return err
	})
	return ok, err
}

// Resolve implements content.Resolver.
func (w *wrapped) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	var d ocispec.Descriptor
	err := w.do(ctx, opResolve, ocispec.Descriptor{}, func(ctx context.Context) error {
		var err error
		d, err = w.t.Resolve(ctx, ref)
		return err
	})
	if err == nil {
		err = checkReferenced(d)
	}
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return d, nil
}

// Tag implements content.Tagger.
func (w *wrapped) Tag(ctx context.Context, desc ocispec.Descriptor, ref string) error {
	if err := httpblob.ValidateDigest(desc); err != nil {
		return err
	}
	return w.do(ctx, opTag, desc, func(ctx context.Context) error { return w.t.Tag(ctx, desc, ref) })
}

// Predecessors implements content.PredecessorFinder.
func (i pfImpl) Predecessors(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	w := i.w
	var ds []ocispec.Descriptor
	err := w.do(ctx, opPredecessors, ocispec.Descriptor{}, func(ctx context.Context) error {
		var err error
		ds, err = w.t.(content.PredecessorFinder).Predecessors(ctx, desc)
		return err
	})
	return ds, err
}

// FetchReference implements registry.ReferenceFetcher. The content is a
// manifest; it is read whole under the retry policy.
func (i rfImpl) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	w := i.w
	var d ocispec.Descriptor
	var raw []byte
	err := w.do(ctx, opResolve, ocispec.Descriptor{}, func(ctx context.Context) error {
		var err error
		d, raw, err = fetchReference(ctx, w.t.(registry.ReferenceFetcher), ref, w.opts)
		return err
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return d, io.NopCloser(bytes.NewReader(raw)), nil
}

// PushReference implements registry.ReferencePusher.
func (i rpImpl) PushReference(ctx context.Context, desc ocispec.Descriptor, r io.Reader, ref string) error {
	w := i.w
	if err := httpblob.ValidateDigest(desc); err != nil {
		return blobError(desc, err)
	}
	raw, err := content.ReadAll(r, desc)
	if err != nil {
		return err
	}
	return w.do(ctx, opPush, desc, func(ctx context.Context) error {
		return w.t.(registry.ReferencePusher).PushReference(ctx, desc, bytes.NewReader(raw), ref)
	})
}

// Mount implements registry.Mounter. When the registry declines to mount,
// oras-go would push getContent's reader itself, monolithically, with no
// resume and no events; the blob goes through Push instead (the resumable
// upload). The session the declined mount opened is left to the registry
// to collect, as after any declined mount. With a nil getContent, oras-go's own fallback (a fetch from
// fromRepo) is kept.
func (i moImpl) Mount(ctx context.Context, desc ocispec.Descriptor, fromRepo string, getContent func() (io.ReadCloser, error)) error {
	w := i.w
	if err := httpblob.ValidateDigest(desc); err != nil {
		return err
	}
	mounter := w.t.(registry.Mounter)
	if getContent == nil {
		return w.do(ctx, opMount, desc, func(ctx context.Context) error {
			return mounter.Mount(ctx, desc, fromRepo, nil)
		})
	}
	err := w.do(ctx, opMount, desc, func(ctx context.Context) error {
		return mounter.Mount(ctx, desc, fromRepo, func() (io.ReadCloser, error) { return nil, retrypolicy.Permanent(errNoMountFallback) })
	})
	if !errors.Is(err, errNoMountFallback) {
		return err
	}
	rc, err := getContent()
	if err != nil {
		return err
	}
	defer rc.Close()
	return w.Push(ctx, desc, rc)
}

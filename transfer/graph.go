package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/semaphore"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"

	"github.com/sturdyoci/sturdy/internal/httpblob"
	"github.com/sturdyoci/sturdy/retrypolicy"
)

// Copy copies the artifact tagged srcRef in src, with everything under it,
// to dst and tags it dstRef (srcRef if dstRef is empty), like oras.Copy.
// It returns the root descriptor.
//
// Every blob is moved under its own retry loop (Options.Retry) with
// resume where the protocol allows; a blob that fails does not cancel the
// others. The root is pushed and tagged only when everything under it is
// in dst. On failure the error joins one *BlobError per failed node (each
// naming its digest and attempts) and ErrIncomplete if a manifest was held
// back. When ctx is cancelled Copy stops every transfer and returns an
// error that matches ctx.Err(); nothing is tagged.
func Copy(ctx context.Context, src oras.ReadOnlyTarget, srcRef string, dst oras.Target, dstRef string, opts Options) (ocispec.Descriptor, error) {
	if dstRef == "" {
		dstRef = srcRef
	}
	if err := opts.Validate(); err != nil {
		return ocispec.Descriptor{}, err
	}
	src, dst = rewireTarget(src, opts), rewireTarget(dst, opts)
	root, raw, err := resolveOnMirrors(ctx, srcRef, opts)
	if err != nil {
		root, raw, err = resolveRoot(ctx, src, srcRef, opts)
	}
	if err != nil {
		if _, derr := digest.Parse(srcRef); derr != nil && len(opts.Mirrors) > 0 {
			return ocispec.Descriptor{}, fmt.Errorf("resolve %q on the origin (tags are never resolved on a mirror): %w", srcRef, redacted(err))
		}
		return ocispec.Descriptor{}, fmt.Errorf("resolve %q: %w", srcRef, redacted(err))
	}
	if err := copyGraph(ctx, src, dst, root, dstRef, opts, raw); err != nil {
		return ocispec.Descriptor{}, err
	}
	return root, nil
}

// resolveRoot resolves ref. From a registry it GETs the manifest, as
// oras.Copy does, and keeps its bytes for the copy: the answer's media type
// is checked (a captive portal's HEAD may lack the headers that would let
// a HEAD say what it is), and a registry that counts manifest GETs as
// pulls (Docker Hub) counts one.
func resolveRoot(ctx context.Context, src oras.ReadOnlyTarget, ref string, opts Options) (ocispec.Descriptor, []byte, error) {
	var root ocispec.Descriptor
	var raw []byte
	rf, byRef := unwrapTarget(src).(registry.ReferenceFetcher)
	err := doMetadata(ctx, opts, opResolve, nil, 0, func(ctx context.Context) error {
		if !byRef {
			var err error
			root, err = src.Resolve(ctx, ref)
			if err == nil {
				err = checkReferenced(root)
			}
			return err
		}
		var err error
		root, raw, err = fetchReference(ctx, rf, ref, opts)
		return err
	})
	return root, raw, err
}

// resolveOnMirrors resolves a digest reference on the mirrors, in order,
// one attempt each: content by digest may come from any of them, so a
// copy by digest goes on while the origin is down. Tags are never
// resolved on a mirror (a cache may serve a stale one): it fails for
// them, and without mirrors.
func resolveOnMirrors(ctx context.Context, ref string, opts Options) (ocispec.Descriptor, []byte, error) {
	d, err := digest.Parse(ref)
	if err != nil || len(opts.Mirrors) == 0 {
		return ocispec.Descriptor{}, nil, errdef.ErrNotFound
	}
	err = errdef.ErrNotFound
	for _, m := range opts.Mirrors {
		t := rewireTarget(m.Target, opts)
		var root ocispec.Descriptor
		var raw []byte
		switch r := unwrapTarget(t).(type) {
		case registry.ReferenceFetcher:
			root, raw, err = fetchReference(ctx, r, ref, opts)
		case content.Resolver:
			if root, err = r.Resolve(ctx, ref); err == nil {
				if err = checkReferenced(root); err == nil {
					raw, err = fetchVerified(ctx, t.Fetch, root, opts.maxMetadataBytes())
				}
			}
		default:
			continue
		}
		if err == nil && root.Digest == d && mediaTypeAgrees(root, raw) {
			return root, raw, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return ocispec.Descriptor{}, nil, err
}

// mediaTypeAgrees says whether a manifest's own mediaType, when it names
// one, is the one its descriptor claims: the digest covers the bytes, not
// the descriptor, and a mirror that called a manifest an index would have
// the copy skip its layers.
func mediaTypeAgrees(desc ocispec.Descriptor, raw []byte) bool {
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	return m.MediaType == "" || m.MediaType == desc.MediaType
}

// fetchReference is one attempt at reading the manifest ref names whole:
// it must be a manifest (checkReferenced) within MaxMetadataBytes, and
// its bytes must match its descriptor.
func fetchReference(ctx context.Context, rf registry.ReferenceFetcher, ref string, opts Options) (ocispec.Descriptor, []byte, error) {
	desc, rc, err := rf.FetchReference(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	defer rc.Close()
	if err := checkReferenced(desc); err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if err := checkManifestSize(opts, desc); err != nil {
		return ocispec.Descriptor{}, nil, retrypolicy.Permanent(err)
	}
	raw, err := content.ReadAll(rc, desc)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return desc, raw, nil
}

// CopyGraph copies the graph rooted at root from src to dst, like
// oras.CopyGraph, with the guarantees of Copy (without the tag).
func CopyGraph(ctx context.Context, src content.ReadOnlyStorage, dst content.Storage, root ocispec.Descriptor, opts Options) error {
	return copyGraph(ctx, src, dst, root, "", opts, nil)
}

type graphCopier struct {
	src   content.ReadOnlyStorage
	dst   content.Storage
	opts  Options
	blobs *blobMover
	sem   *semaphore.Weighted

	rootRaw []byte // the root manifest's bytes, when resolving read them

	mu    sync.Mutex
	nodes map[digest.Digest]*nodeResult
	errs  []error
}

type nodeResult struct {
	done chan struct{}
	err  error
}

func copyGraph(ctx context.Context, src content.ReadOnlyStorage, dst content.Storage, root ocispec.Descriptor, tag string, opts Options, rootRaw []byte) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	state, err := openStateDir(opts.StateDir)
	if err != nil {
		return err
	}
	src, dst = rewireTarget(src, opts), rewireTarget(dst, opts)
	g := &graphCopier{
		src:   src,
		dst:   dst,
		opts:  opts,
		blobs: newBlobMover(src, dst, opts),
		sem:   semaphore.NewWeighted(int64(opts.concurrency())),
		nodes: map[digest.Digest]*nodeResult{},
	}
	g.blobs.state = state
	if rootRaw != nil && root.Digest.Validate() == nil && root.Digest.Algorithm().FromBytes(rootRaw) == root.Digest {
		g.rootRaw = rootRaw
	}
	err = g.node(ctx, root, tag)
	g.mu.Lock()
	errs := g.errs
	g.mu.Unlock()
	if ctx.Err() != nil {
		// Whatever else failed, the caller must see its cancellation.
		errs = append([]error{ctx.Err()}, errs...)
	}
	if err != nil && len(errs) == 0 {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// node copies desc and everything under it, once per digest, and returns
// an error if desc is not in dst afterwards.
func (g *graphCopier) node(ctx context.Context, desc ocispec.Descriptor, tag string) error {
	g.mu.Lock()
	if r, ok := g.nodes[desc.Digest]; ok && tag == "" {
		g.mu.Unlock()
		select {
		case <-r.done:
			return r.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := &nodeResult{done: make(chan struct{})}
	g.nodes[desc.Digest] = r
	g.mu.Unlock()

	r.err = g.copyNode(ctx, desc, tag)
	close(r.done)
	return r.err
}

func (g *graphCopier) copyNode(ctx context.Context, desc ocispec.Descriptor, tag string) error {
	ev := newBlobEvents(g.blobs.opts.Observer, desc)
	// A digest from a manifest is the server's word: it must be one sturdy
	// can verify before it goes into a URL, a path or a store.
	if err := httpblob.ValidateDigest(desc); err != nil {
		err = fromSource(err)
		g.fail(ev, desc, err)
		return err
	}
	if isForeignLayer(desc) {
		// Not distributable: its URLs say where it lives, and oras.Copy
		// does not copy it either.
		ev.skipped("foreign layer")
		return nil
	}
	if !isManifest(desc) {
		// The caller holds the blob's slot (a root that is a blob needs
		// none: it is alone).
		if err := g.blobs.move(ctx, desc, ev); err != nil {
			g.fail(ev, desc, err)
			return err
		}
		return nil
	}

	// A manifest already in dst is taken as complete, with its subgraph,
	// as oras-go does; with a tag it is still tagged (pushed again with the
	// tag to a registry, tagged elsewhere), its children left alone.
	exists, err := g.blobs.exists(ctx, desc, ev)
	if err != nil {
		g.fail(ev, desc, err)
		return err
	}
	if exists && tag == "" {
		ev.skipped("exists")
		return nil
	}
	raw := g.rootRaw
	if raw == nil || tag == "" {
		if raw, err = readManifest(ctx, g.opts, g.blobs.manifestFetcher(g.src), desc, ev); err != nil {
			err = fromSource(err)
			g.fail(ev, desc, err)
			return err
		}
	}
	if exists {
		if err := g.pushManifest(ctx, desc, raw, tag, ev); err != nil {
			g.fail(ev, desc, err)
			return err
		}
		ev.skipped("exists")
		return nil
	}
	children, err := content.Successors(ctx, bytesFetcher{desc, raw}, desc)
	if err != nil {
		err = retrypolicy.Permanent(fromSource(fmt.Errorf("parse manifest: %w", err)))
		g.fail(ev, desc, err)
		return err
	}
	var wg sync.WaitGroup
	var childErr atomic.Bool
	for _, c := range children {
		if !isManifest(c) {
			// Take a blob's slot before starting its goroutine: a
			// manifest of 10,000 layers runs Concurrency goroutines,
			// not 10,000 waiting ones.
			if err := g.sem.Acquire(ctx, 1); err != nil {
				childErr.Store(true) // cancelled: the rest is not started
				break
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !isManifest(c) {
				defer g.sem.Release(1)
			}
			if g.node(ctx, c, "") != nil {
				childErr.Store(true)
			}
		}()
	}
	wg.Wait()
	if childErr.Load() || ctx.Err() != nil {
		g.mu.Lock()
		g.errs = append(g.errs, fmt.Errorf("%w: %s %s", ErrIncomplete, desc.MediaType, desc.Digest))
		g.mu.Unlock()
		return ErrIncomplete
	}
	ev.started(0)
	if err := g.pushManifest(ctx, desc, raw, tag, ev); err != nil {
		g.fail(ev, desc, err)
		return err
	}
	ev.completed()
	return nil
}

func (g *graphCopier) fail(ev *blobEvents, desc ocispec.Descriptor, err error) {
	ev.failed(g.opts.Retry.Verdict(err).Reason, err) // "canceled" when the caller cancelled
	g.mu.Lock()
	g.errs = append(g.errs, blobError(desc, redacted(err)))
	g.mu.Unlock()
}

// readManifest reads a manifest whole, verified, under the retry policy.
// Manifests are read into memory so that their push can be retried; one
// above MaxMetadataBytes is refused, as oras-go's repository refuses it.
func readManifest(ctx context.Context, opts Options, f content.Fetcher, desc ocispec.Descriptor, ev *blobEvents) ([]byte, error) {
	if err := checkManifestSize(opts, desc); err != nil {
		return nil, err
	}
	var raw []byte
	err := doMetadata(ctx, opts, opFetch, ev, desc.Size, func(ctx context.Context) error {
		rc, err := f.Fetch(ctx, desc)
		if err != nil {
			return err
		}
		defer rc.Close()
		raw, err = content.ReadAll(rc, desc)
		return err
	})
	return raw, err
}

func checkManifestSize(opts Options, desc ocispec.Descriptor) error {
	if desc.Size > opts.maxMetadataBytes() {
		return fmt.Errorf("manifest %s is %d bytes, more than MaxMetadataBytes %d: %w",
			desc.Digest, desc.Size, opts.maxMetadataBytes(), errdef.ErrSizeExceedsLimit)
	}
	return nil
}

func (g *graphCopier) pushManifest(ctx context.Context, desc ocispec.Descriptor, raw []byte, tag string, ev *blobEvents) error {
	rp, byRef := unwrapTarget(g.dst).(registry.ReferencePusher)
	err := doMetadata(ctx, g.opts, opPush, ev, desc.Size, func(ctx context.Context) error {
		if tag != "" && byRef {
			// A registry tags by pushing the manifest under the tag.
			return rp.PushReference(ctx, desc, bytes.NewReader(raw), tag)
		}
		err := g.dst.Push(ctx, desc, bytes.NewReader(raw))
		if errors.Is(err, errdef.ErrAlreadyExists) {
			err = nil
		}
		return err
	})
	if err != nil || tag == "" || byRef {
		return err
	}
	tagger, ok := g.dst.(content.Tagger)
	if !ok {
		return retrypolicy.Permanent(fmt.Errorf("destination cannot tag %q: %w", tag, errdef.ErrUnsupported))
	}
	return doMetadata(ctx, g.opts, opTag, ev, 0, func(ctx context.Context) error {
		return tagger.Tag(ctx, desc, tag)
	})
}

// bytesFetcher serves one manifest already in memory to content.Successors.
type bytesFetcher struct {
	desc ocispec.Descriptor
	raw  []byte
}

func (f bytesFetcher) Fetch(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.Digest != f.desc.Digest {
		return nil, errdef.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(f.raw)), nil
}

// ErrNotManifest is returned when a reference resolves to content that is
// not an OCI or Docker manifest or index: a captive portal's or a proxy's
// HTML page answering 200 for every path, which oras-go accepts as a
// "manifest" of media type text/html.
var ErrNotManifest = errors.New("reference does not resolve to a manifest")

// checkReferenced refuses a descriptor resolved from a tag that is not a
// manifest or an index: a tag names a manifest, in the distribution
// protocol and in an OCI layout alike.
func checkReferenced(desc ocispec.Descriptor) error {
	if err := httpblob.ValidateDigest(desc); err != nil {
		return err
	}
	if !isManifest(desc) {
		return retrypolicy.Permanent(fmt.Errorf("%w: media type %q", ErrNotManifest, desc.MediaType))
	}
	return nil
}

// isForeignLayer reports a non-distributable layer, which oras.Copy skips:
// OCI's deprecated non-distributable layer types and Docker's foreign
// layer.
func isForeignLayer(desc ocispec.Descriptor) bool {
	switch desc.MediaType {
	case "application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return true
	}
	return false
}

// isManifest reports whether desc is a manifest or an index, whose bytes
// are read whole and whose children are copied first.
func isManifest(desc ocispec.Descriptor) bool {
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.oci.artifact.manifest.v1+json":
		return true
	}
	return false
}

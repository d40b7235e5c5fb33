package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
)

// verified is what verifyLayout checked.
type verified struct {
	blobs int   // files under blobs/ re-hashed
	bytes int64 // their total size
	nodes int   // descriptors of the graph found
}

// verifyLayout checks a pulled OCI layout on its own terms, without
// trusting the code that wrote it: every file under blobs/ is re-hashed
// and must match its name, the tag must resolve to root, and every
// descriptor under root must be present with its size.
func verifyLayout(ctx context.Context, dir, tag string, root ocispec.Descriptor) (verified, error) {
	var v verified
	err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(path))), d.Name())
		n, err := rehash(path, want)
		v.blobs++
		v.bytes += n
		return err
	})
	if err != nil {
		return v, err
	}

	store, err := oci.New(dir)
	if err != nil {
		return v, err
	}
	got, err := store.Resolve(ctx, tag)
	if err != nil {
		return v, fmt.Errorf("resolve %q in the layout: %w", tag, err)
	}
	if got.Digest != root.Digest || got.Size != root.Size {
		return v, fmt.Errorf("tag %q is %s, want %s", tag, got.Digest, root.Digest)
	}
	err = walkGraph(ctx, store, root, func(d ocispec.Descriptor) error {
		v.nodes++
		fi, err := os.Stat(filepath.Join(dir, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded()))
		if err != nil {
			return fmt.Errorf("%s missing from the layout: %w", d.Digest, err)
		}
		if fi.Size() != d.Size {
			return fmt.Errorf("%s is %d bytes in the layout, the manifest says %d", d.Digest, fi.Size(), d.Size)
		}
		return nil
	})
	return v, err
}

// rehash reads path through the digest's hash and compares.
func rehash(path string, want digest.Digest) (int64, error) {
	if err := want.Validate(); err != nil {
		return 0, fmt.Errorf("%s: not a blob name: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := want.Algorithm().Digester()
	n, err := io.Copy(h.Hash(), f)
	if err != nil {
		return n, err
	}
	if got := h.Digest(); got != want {
		return n, fmt.Errorf("%s: content hashes to %s: %w", want, got, errDigestMismatch)
	}
	return n, nil
}

var errDigestMismatch = errors.New("digest mismatch")

// walkGraph calls visit for root and every descriptor under it.
func walkGraph(ctx context.Context, f content.Fetcher, root ocispec.Descriptor, visit func(ocispec.Descriptor) error) error {
	if err := visit(root); err != nil {
		return err
	}
	children, err := content.Successors(ctx, f, root)
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := walkGraph(ctx, f, c, visit); err != nil {
			return err
		}
	}
	return nil
}

// Wraporas shows an existing oras.Copy pipeline made resilient without
// rewriting it: its source and destination are wrapped with transfer.Wrap,
// and the oras.Copy call stays as it was.
//
// It starts an in-process registry whose blob downloads are reset at every
// 2 MiB boundary of the blob, pushes a small artifact, and runs the
// pipeline -- a pull into an OCI layout -- twice:
//
//	oras.Copy(ctx, src, "v1", dst, "v1", oras.DefaultCopyOptions)                                   // fails at the first reset
//	oras.Copy(ctx, transfer.Wrap(src, opts), "v1", transfer.Wrap(dst, opts), "v1", oras.DefaultCopyOptions) // resumes and finishes
//
// The wrapped source hands oras.Copy a reader that heals itself: when the
// connection breaks it continues with a ranged GET from the last byte
// received and checks the digest over the whole stream. oras.Copy still
// cancels sibling blobs on the first error it sees; Wrap makes that error
// rare, transfer.Copy removes it.
//
//	go -C examples run ./wraporas
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

const (
	repoName  = "demo/model"
	tag       = "v1"
	blobSize  = 8 << 20
	resetStep = 2 << 20
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wraporas:", err)
		os.Exit(1)
	}
}

// pipeline is the "existing" code: pull tag v1 from src into dst. It does
// not change; only what is passed to it does.
func pipeline(ctx context.Context, src, dst oras.Target) (ocispec.Descriptor, error) {
	return oras.Copy(ctx, src, tag, dst, tag, oras.DefaultCopyOptions)
}

// options for Wrap: production policy with a short first backoff, so the
// example is quick.
func options(obs progress.Observer) transfer.Options {
	return transfer.Options{
		Retry:        retrypolicy.Config{InitialBackoff: 20 * time.Millisecond},
		StallTimeout: 5 * time.Second,
		Observer:     obs,
	}
}

func run(ctx context.Context, out io.Writer) error {
	reg, repo, weights, err := setup(ctx)
	if err != nil {
		return err
	}
	defer reg.Close()
	fmt.Fprintf(out, "registry %s: blob GETs reset at every %s boundary of the blob\n", reg.Host(), ui.Bytes(resetStep))
	fmt.Fprintf(out, "pushed %s: %s of weights\n\n", reg.Reference(repoName, tag), ui.Bytes(weights.Size))

	dir, err := os.MkdirTemp("", "wraporas-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	plain, err := oci.New(filepath.Join(dir, "unwrapped"))
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = pipeline(ctx, repo, plain)
	if err == nil {
		return fmt.Errorf("the unwrapped pipeline succeeded through the faults")
	}
	fmt.Fprintf(out, "unwrapped oras.Copy: failed after %s: %s\n  %v\n\n", ui.Duration(time.Since(start)), retrypolicy.ShortReason(err), err)

	layout, err := oci.New(filepath.Join(dir, "wrapped"))
	if err != nil {
		return err
	}
	tracker := progress.NewTracker()
	opts := options(progress.Multi(tracker, ui.NewLines(out, "pull")))
	start = time.Now()
	root, err := pipeline(ctx, transfer.Wrap(repo, opts), transfer.Wrap(layout, opts))
	if err != nil {
		return fmt.Errorf("wrapped oras.Copy: %w", err)
	}
	s := tracker.Summary()
	fmt.Fprintf(out, "\nwrapped oras.Copy: ok in %s: %d retries, %d resumed, %s payload, %s on the wire\n",
		ui.Duration(time.Since(start)), s.Retries, s.Resumes, ui.Bytes(s.Payload), ui.Bytes(s.Wire))
	if err := verify(ctx, layout, root, weights); err != nil {
		return err
	}
	fmt.Fprintf(out, "verified: %s -> %s, weights re-read and digest checked\n", tag, root.Digest)
	return nil
}

// setup starts a registry, pushes an artifact with one random layer, and
// only then arms the fault, so that the push is clean.
func setup(ctx context.Context) (*registrytest.Registry, *remote.Repository, ocispec.Descriptor, error) {
	reg, err := registrytest.Start()
	if err != nil {
		return nil, nil, ocispec.Descriptor{}, err
	}
	repo, err := reg.Repository(repoName)
	if err == nil {
		var weights ocispec.Descriptor
		if weights, err = pushArtifact(ctx, repo); err == nil {
			reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(resetStep)})
			return reg, repo, weights, nil
		}
	}
	reg.Close()
	return nil, nil, ocispec.Descriptor{}, err
}

func pushArtifact(ctx context.Context, repo *remote.Repository) (ocispec.Descriptor, error) {
	data := make([]byte, blobSize)
	rand.Read(data)
	weights := content.NewDescriptorFromBytes("application/vnd.example.weights", data)
	weights.Annotations = map[string]string{ocispec.AnnotationTitle: "weights.bin"}
	if err := repo.Push(ctx, weights, bytes.NewReader(data)); err != nil {
		return weights, err
	}
	root, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.example.model",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{weights}})
	if err != nil {
		return weights, err
	}
	return weights, repo.Tag(ctx, root, tag)
}

// verify resolves the tag in the layout and reads the weights back through
// a digest-verifying reader.
func verify(ctx context.Context, layout *oci.Store, root, weights ocispec.Descriptor) error {
	got, err := layout.Resolve(ctx, tag)
	if err != nil {
		return err
	}
	if got.Digest != root.Digest {
		return fmt.Errorf("layout tag %s is %s, want %s", tag, got.Digest, root.Digest)
	}
	_, err = content.FetchAll(ctx, layout, weights)
	return err
}

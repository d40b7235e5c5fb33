package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
)

const (
	artifactType = "application/vnd.sturdyoci.bench.v1"
	layerType    = "application/vnd.sturdyoci.bench.layer.v1"
	benchTag     = "bench"
)

// artifact is a model-like artifact in an OCI layout on disk: one manifest,
// the empty JSON config and some layers of random bytes.
type artifact struct {
	name    string
	dir     string // OCI layout
	root    ocispec.Descriptor
	layers  []ocispec.Descriptor
	payload int64 // manifest + config + layers: what a full copy moves
}

// newPRNG returns a deterministic random stream: the same seed gives the
// same bytes on every machine and every run, so blobs (and digests) are
// reproducible.
func newPRNG(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "sturdy-bench-seed-sturdy-bench")
	return rand.NewChaCha8(s)
}

// makeArtifact writes an artifact with the given layer sizes into a fresh
// OCI layout under parent. Layers are streamed from the PRNG straight into
// the layout's blob directory (hashed on the way), never held in memory.
func makeArtifact(ctx context.Context, parent, name string, seed uint64, sizes []int64) (*artifact, error) {
	dir := filepath.Join(parent, name)
	blobDir := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return nil, err
	}
	a := &artifact{name: name, dir: dir}
	src := newPRNG(seed)
	// One buffered writer, one hash and one copy buffer for every layer:
	// 1000 small layers do not need 1000 allocations of each.
	w := bufio.NewWriterSize(nil, 1<<20)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for i, size := range sizes {
		d, err := writeBlob(blobDir, io.LimitReader(src, size), w, h, buf)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		a.layers = append(a.layers, ocispec.Descriptor{MediaType: layerType, Digest: d, Size: size})
		a.payload += size
	}

	store, err := oci.New(dir)
	if err != nil {
		return nil, err
	}
	cfg := ocispec.DescriptorEmptyJSON
	if err := store.Push(ctx, cfg, bytes.NewReader(cfg.Data)); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.Data = nil
	manifest := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       cfg,
		Layers:       a.layers,
	}
	raw, err := json.Marshal(manifest)
	if err != nil {
		return nil, err
	}
	a.root = content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, raw)
	if err := store.Push(ctx, a.root, bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := store.Tag(ctx, a.root, benchTag); err != nil {
		return nil, err
	}
	a.payload += cfg.Size + a.root.Size
	return a, nil
}

// writeBlob streams r into blobDir under its sha256 and returns the digest.
func writeBlob(blobDir string, r io.Reader, w *bufio.Writer, h hash.Hash, buf []byte) (digest.Digest, error) {
	tmp, err := os.CreateTemp(blobDir, ".ingest-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h.Reset()
	w.Reset(io.MultiWriter(tmp, h))
	if _, err := io.CopyBuffer(w, r, buf); err != nil {
		tmp.Close()
		return "", err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	hexSum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(blobDir, hexSum)); err != nil {
		return "", err
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hexSum), nil
}

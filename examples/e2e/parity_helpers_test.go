package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// Media types of the shapes. Docker's are spelled out: oras-go keeps its
// own constants internal.
const (
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerConfig   = "application/vnd.docker.container.image.v1+json"
	mtDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mtDockerForeign  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	mtOCINondistGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	mtTestConfig     = "application/vnd.sturdy.parity.config+json"
)

// The tags of a parity run: every source tags its root srcTag; Copy tags
// the destination's root dstTag, a different name, so that a copy that
// tags the wrong name shows.
const (
	srcTag = "v1"
	dstTag = "copied"
)

// pgraph is a source graph for the parity suite, in a memory store, with
// every descriptor the shape mentions (present in the source or not) and
// the bytes of those present.
type pgraph struct {
	t     testing.TB
	name  string
	src   *memory.Store
	root  ocispec.Descriptor
	tags  map[string]ocispec.Descriptor
	nodes map[digest.Digest]ocispec.Descriptor
	data  map[digest.Digest][]byte
	// kids are manifests under the root, in the order they were made; a
	// prefill may put one of them in the destination first.
	kids []ocispec.Descriptor
}

func newPGraph(t testing.TB, name string) *pgraph {
	return &pgraph{t: t, name: name, src: memory.New(), tags: map[string]ocispec.Descriptor{},
		nodes: map[digest.Digest]ocispec.Descriptor{}, data: map[digest.Digest][]byte{}}
}

// bytesFor returns n deterministic bytes, distinct per shape and label.
func (g *pgraph) bytesFor(label string, n int) []byte {
	b := make([]byte, 0, n+sha256.Size)
	seed := sha256.Sum256([]byte(g.name + "/" + label))
	for len(b) < n {
		b = append(b, seed[:]...)
		seed = sha256.Sum256(seed[:])
	}
	return b[:n]
}

func (g *pgraph) push(d ocispec.Descriptor, b []byte) ocispec.Descriptor {
	g.t.Helper()
	if _, ok := g.data[d.Digest]; !ok {
		if err := g.src.Push(context.Background(), d, bytes.NewReader(b)); err != nil {
			g.t.Fatalf("push %s: %v", d.Digest, err)
		}
	}
	g.nodes[d.Digest] = d
	g.data[d.Digest] = b
	return d
}

// blob pushes b to the source as a blob of media type mt.
func (g *pgraph) blob(mt string, b []byte) ocispec.Descriptor {
	g.t.Helper()
	return g.push(content.NewDescriptorFromBytes(mt, b), b)
}

// absent describes a blob the source does not hold (a foreign layer).
func (g *pgraph) absent(mt string, b []byte, urls ...string) ocispec.Descriptor {
	d := content.NewDescriptorFromBytes(mt, b)
	d.URLs = urls
	g.nodes[d.Digest] = d
	return d
}

func (g *pgraph) manifest(mt string, config ocispec.Descriptor, layers []ocispec.Descriptor, subject *ocispec.Descriptor, annotations map[string]string) ocispec.Descriptor {
	g.t.Helper()
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mt, Config: config,
		Layers: layers, Subject: subject, Annotations: annotations}
	raw, err := json.Marshal(m)
	if err != nil {
		g.t.Fatal(err)
	}
	return g.push(content.NewDescriptorFromBytes(mt, raw), raw)
}

func (g *pgraph) index(mt string, manifests []ocispec.Descriptor, subject *ocispec.Descriptor) ocispec.Descriptor {
	g.t.Helper()
	ix := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mt, Manifests: manifests, Subject: subject}
	raw, err := json.Marshal(ix)
	if err != nil {
		g.t.Fatal(err)
	}
	return g.push(content.NewDescriptorFromBytes(mt, raw), raw)
}

// image makes a small OCI image: a config and the given layers.
func (g *pgraph) image(label string, layers ...ocispec.Descriptor) ocispec.Descriptor {
	cfg := g.blob(ocispec.MediaTypeImageConfig, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","label":%q}`, g.name+"/"+label)))
	return g.manifest(ocispec.MediaTypeImageManifest, cfg, layers, nil, nil)
}

func (g *pgraph) layer(label string, n int) ocispec.Descriptor {
	return g.blob(ocispec.MediaTypeImageLayerGzip, g.bytesFor(label, n))
}

func (g *pgraph) tag(d ocispec.Descriptor, ref string) {
	g.t.Helper()
	if err := g.src.Tag(context.Background(), d, ref); err != nil {
		g.t.Fatal(err)
	}
	g.tags[ref] = d
}

// setRoot tags d srcTag and makes it the root.
func (g *pgraph) setRoot(d ocispec.Descriptor) *pgraph {
	g.tag(d, srcTag)
	g.root = d
	return g
}

func parityPlatform(d ocispec.Descriptor, os, arch string) ocispec.Descriptor {
	d.Platform = &ocispec.Platform{OS: os, Architecture: arch}
	return d
}

// A parity shape.
type pshape struct {
	name  string
	build func(t testing.TB) *pgraph
	// seedable: the graph can be pushed to a registry, which then serves
	// as a source.
	seedable bool
	// graphOnly: the root is not a manifest; only the CopyGraph methods
	// apply (a tag names a manifest).
	graphOnly bool
	// prefill puts part of the graph in a fresh destination before each
	// run, plain and sturdy alike.
	prefill func(t testing.TB, g *pgraph, dst oras.Target, kind string)
}

// parityPushOnly puts d's own bytes in dst (not its subgraph); a registry
// refuses a manifest whose children it lacks, so there the whole subgraph
// is copied with plain oras-go.
func parityPushOnly(t testing.TB, g *pgraph, dst oras.Target, kind string, d ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	if kind == "registry" {
		if err := oras.CopyGraph(ctx, g.src, dst, d, oras.DefaultCopyGraphOptions); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := dst.Push(ctx, d, bytes.NewReader(g.data[d.Digest])); err != nil {
		t.Fatal(err)
	}
}

// A destination kind.
type pdest struct {
	name string
	new  func(t testing.TB) (oras.Target, string) // the target, and for an OCI layout its directory
}

func parityDests(reg *registrytest.Registry) []pdest {
	var n atomic.Int64
	return []pdest{
		{"memory", func(testing.TB) (oras.Target, string) { return memory.New(), "" }},
		{"oci", func(t testing.TB) (oras.Target, string) {
			dir := t.TempDir()
			s, err := oci.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s, dir
		}},
		{"registry", func(t testing.TB) (oras.Target, string) {
			return repo(t, reg, fmt.Sprintf("parity/dst-%d", n.Add(1))), ""
		}},
	}
}

// A copy method: plain oras-go (the reference) or one of sturdy's ways.
type pmethod struct {
	name  string
	graph bool // CopyGraph semantics (no tag); else Copy from srcTag to dstTag
	run   func(ctx context.Context, src, dst oras.Target, root ocispec.Descriptor) (ocispec.Descriptor, error)
}

func parityOpts() transfer.Options {
	return transfer.Options{Retry: fast(2)}
}

var (
	plainCopy = pmethod{"oras.Copy", false, func(ctx context.Context, src, dst oras.Target, _ ocispec.Descriptor) (ocispec.Descriptor, error) {
		return oras.Copy(ctx, src, srcTag, dst, dstTag, oras.DefaultCopyOptions)
	}}
	plainGraph = pmethod{"oras.CopyGraph", true, func(ctx context.Context, src, dst oras.Target, root ocispec.Descriptor) (ocispec.Descriptor, error) {
		return root, oras.CopyGraph(ctx, src, dst, root, oras.DefaultCopyGraphOptions)
	}}
	sturdyMethods = []pmethod{
		{"transfer.Copy", false, func(ctx context.Context, src, dst oras.Target, _ ocispec.Descriptor) (ocispec.Descriptor, error) {
			return transfer.Copy(ctx, src, srcTag, dst, dstTag, parityOpts())
		}},
		{"transfer.CopyGraph", true, func(ctx context.Context, src, dst oras.Target, root ocispec.Descriptor) (ocispec.Descriptor, error) {
			return root, transfer.CopyGraph(ctx, src, dst, root, parityOpts())
		}},
		{"oras.Copy(Wrap)", false, func(ctx context.Context, src, dst oras.Target, _ ocispec.Descriptor) (ocispec.Descriptor, error) {
			return oras.Copy(ctx, transfer.Wrap(src, parityOpts()), srcTag, transfer.Wrap(dst, parityOpts()), dstTag, oras.DefaultCopyOptions)
		}},
		{"oras.CopyGraph(Wrap)", true, func(ctx context.Context, src, dst oras.Target, root ocispec.Descriptor) (ocispec.Descriptor, error) {
			return root, oras.CopyGraph(ctx, transfer.Wrap(src, parityOpts()), transfer.Wrap(dst, parityOpts()), root, oras.DefaultCopyGraphOptions)
		}},
	}
)

// pstate is what a copy left in a destination.
type pstate struct {
	root    ocispec.Descriptor // what Copy returned
	err     error
	present []string          // "mediaType digest" of every node of the shape in dst, sorted
	tags    map[string]string // tag -> digest
	index   []string          // an OCI layout's index.json entries, sorted
}

// runParity runs m on a fresh destination of kind d and records the
// result. Every node found in the destination is fetched back through it
// and compared with the source's bytes.
func runParity(t *testing.T, g *pgraph, s pshape, src oras.Target, d pdest, m pmethod) pstate {
	t.Helper()
	ctx := context.Background()
	dst, dir := d.new(t)
	if s.prefill != nil {
		s.prefill(t, g, dst, d.name)
	}
	var st pstate
	st.root, st.err = m.run(ctx, src, dst, g.root)
	for _, n := range g.nodes {
		// Fetched, not asked with Exists: a node counts as present only if
		// the destination serves it back.
		got, err := content.FetchAll(ctx, dst, n)
		if errors.Is(err, errdef.ErrNotFound) {
			continue
		}
		st.present = append(st.present, n.MediaType+" "+n.Digest.String())
		want, inSource := g.data[n.Digest]
		switch {
		case err != nil:
			t.Errorf("%s: fetch %s %s back from the destination: %v", m.name, n.MediaType, n.Digest, err)
		case !inSource:
			t.Errorf("%s: %s %s is in the destination but never was in the source", m.name, n.MediaType, n.Digest)
		case !bytes.Equal(got, want):
			t.Errorf("%s: %s %s: the destination's bytes differ from the source's", m.name, n.MediaType, n.Digest)
		}
	}
	sort.Strings(st.present)
	st.tags = parityTags(t, ctx, g, dst)
	if dir != "" {
		st.index = parityLayoutIndex(t, dir)
	}
	return st
}

// parityTags lists the destination's tags: those a TagLister lists, and
// every tag name the suite uses.
func parityTags(t *testing.T, ctx context.Context, g *pgraph, dst oras.Target) map[string]string {
	t.Helper()
	names := []string{srcTag, dstTag}
	for n := range g.tags {
		names = append(names, n)
	}
	if tl, ok := dst.(registry.TagLister); ok {
		listed, err := registry.Tags(ctx, tl)
		var er *errcode.ErrorResponse
		if err != nil && !(errors.As(err, &er) && er.StatusCode == http.StatusNotFound) {
			t.Errorf("list tags: %v", err)
		}
		names = append(names, listed...)
	}
	tags := map[string]string{}
	for _, n := range names {
		if _, done := tags[n]; done {
			continue
		}
		d, err := dst.Resolve(ctx, n)
		if err != nil {
			if !errors.Is(err, errdef.ErrNotFound) {
				t.Errorf("resolve %q in the destination: %v", n, err)
			}
			continue
		}
		tags[n] = d.MediaType + " " + d.Digest.String()
	}
	return tags
}

// parityLayoutIndex returns the entries of an OCI layout's index.json, each a
// whole descriptor (platform, annotations and all) in JSON.
func parityLayoutIndex(t *testing.T, dir string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		t.Errorf("read index.json: %v", err)
		return nil
	}
	var ix ocispec.Index
	if err := json.Unmarshal(raw, &ix); err != nil {
		t.Errorf("parse index.json: %v", err)
		return nil
	}
	var out []string
	for _, m := range ix.Manifests {
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

// compareParity reports every way got differs from want, plain oras-go's
// result on a fresh destination of the same kind.
func compareParity(t *testing.T, method string, want, got pstate, graph bool) {
	t.Helper()
	if (want.err == nil) != (got.err == nil) {
		t.Errorf("%s: error %v; plain oras-go: %v", method, got.err, want.err)
	} else if want.err != nil {
		t.Logf("both fail (plain oras-go: %v; %s: %v)", want.err, method, got.err)
	}
	if !graph && want.err == nil && got.err == nil && !parityEqualDesc(want.root, got.root) {
		t.Errorf("%s returned root %+v; oras.Copy %+v", method, got.root, want.root)
	}
	if missing, extra := paritySetDiff(want.present, got.present); len(missing)+len(extra) > 0 {
		t.Errorf("%s: destination content differs from plain oras-go's:\n  missing: %s\n  extra:   %s",
			method, strings.Join(missing, ", "), strings.Join(extra, ", "))
	}
	if !parityMapsEqual(want.tags, got.tags) {
		t.Errorf("%s: destination tags %v; plain oras-go's %v", method, got.tags, want.tags)
	}
	if missing, extra := paritySetDiff(want.index, got.index); len(missing)+len(extra) > 0 {
		t.Errorf("%s: index.json differs from plain oras-go's:\n  missing: %s\n  extra:   %s",
			method, strings.Join(missing, "\n           "), strings.Join(extra, "\n           "))
	}
}

func parityEqualDesc(a, b ocispec.Descriptor) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func paritySetDiff(want, got []string) (missing, extra []string) {
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	return missing, extra
}

func parityMapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// paritySeed pushes every tagged graph of g to a fresh repository with
// plain oras-go, to serve as a source.
func paritySeed(t testing.TB, reg *registrytest.Registry, name string, g *pgraph) oras.Target {
	t.Helper()
	r := repo(t, reg, name)
	for tag := range g.tags {
		if _, err := oras.Copy(context.Background(), g.src, tag, r, tag, oras.DefaultCopyOptions); err != nil {
			t.Fatalf("seed %s:%s: %v", name, tag, err)
		}
	}
	return r
}

// Test doubles for Wrap's optional interfaces: a plain oras.Target with
// none of them, and one-method types that add each.

type parityPlain struct{ s *memory.Store }

func (p parityPlain) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	return p.s.Fetch(ctx, d)
}
func (p parityPlain) Push(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	return p.s.Push(ctx, d, r)
}
func (p parityPlain) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	return p.s.Exists(ctx, d)
}
func (p parityPlain) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	return p.s.Resolve(ctx, ref)
}
func (p parityPlain) Tag(ctx context.Context, d ocispec.Descriptor, ref string) error {
	return p.s.Tag(ctx, d, ref)
}

type rfImpl struct{}

func (rfImpl) FetchReference(context.Context, string) (ocispec.Descriptor, io.ReadCloser, error) {
	return ocispec.Descriptor{}, nil, errdef.ErrUnsupported
}

type rpImpl struct{}

func (rpImpl) PushReference(context.Context, ocispec.Descriptor, io.Reader, string) error {
	return errdef.ErrUnsupported
}

type moImpl struct{}

func (moImpl) Mount(context.Context, ocispec.Descriptor, string, func() (io.ReadCloser, error)) error {
	return errdef.ErrUnsupported
}

type pfImpl struct{}

func (pfImpl) Predecessors(context.Context, ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return nil, errdef.ErrUnsupported
}

// Every combination of the four interfaces Wrap's doc names.
type (
	tNone struct{ parityPlain }
	tRF   struct {
		parityPlain
		rfImpl
	}
	tRP struct {
		parityPlain
		rpImpl
	}
	tMo struct {
		parityPlain
		moImpl
	}
	tPF struct {
		parityPlain
		pfImpl
	}
	tRFRP struct {
		parityPlain
		rfImpl
		rpImpl
	}
	tRFMo struct {
		parityPlain
		rfImpl
		moImpl
	}
	tRFPF struct {
		parityPlain
		rfImpl
		pfImpl
	}
	tRPMo struct {
		parityPlain
		rpImpl
		moImpl
	}
	tRPPF struct {
		parityPlain
		rpImpl
		pfImpl
	}
	tMoPF struct {
		parityPlain
		moImpl
		pfImpl
	}
	tRFRPMo struct {
		parityPlain
		rfImpl
		rpImpl
		moImpl
	}
	tRFRPPF struct {
		parityPlain
		rfImpl
		rpImpl
		pfImpl
	}
	tRFMoPF struct {
		parityPlain
		rfImpl
		moImpl
		pfImpl
	}
	tRPMoPF struct {
		parityPlain
		rpImpl
		moImpl
		pfImpl
	}
	tAll struct {
		parityPlain
		rfImpl
		rpImpl
		moImpl
		pfImpl
	}
)

func parityCombos() map[string]oras.Target {
	p := parityPlain{memory.New()}
	return map[string]oras.Target{
		"none": tNone{p}, "RF": tRF{p, rfImpl{}}, "RP": tRP{p, rpImpl{}}, "Mo": tMo{p, moImpl{}}, "PF": tPF{p, pfImpl{}},
		"RF+RP": tRFRP{p, rfImpl{}, rpImpl{}}, "RF+Mo": tRFMo{p, rfImpl{}, moImpl{}}, "RF+PF": tRFPF{p, rfImpl{}, pfImpl{}},
		"RP+Mo": tRPMo{p, rpImpl{}, moImpl{}}, "RP+PF": tRPPF{p, rpImpl{}, pfImpl{}}, "Mo+PF": tMoPF{p, moImpl{}, pfImpl{}},
		"RF+RP+Mo": tRFRPMo{p, rfImpl{}, rpImpl{}, moImpl{}}, "RF+RP+PF": tRFRPPF{p, rfImpl{}, rpImpl{}, pfImpl{}},
		"RF+Mo+PF": tRFMoPF{p, rfImpl{}, moImpl{}, pfImpl{}}, "RP+Mo+PF": tRPMoPF{p, rpImpl{}, moImpl{}, pfImpl{}},
		"RF+RP+Mo+PF": tAll{p, rfImpl{}, rpImpl{}, moImpl{}, pfImpl{}},
	}
}

// An optional interface, and whether oras-go type-asserts it.
type piface struct {
	name     string
	orasUses string // where oras-go v2.7.0 type-asserts it; "" if nowhere
	has      func(any) bool
}

func parityIs[T any](v any) bool { _, ok := v.(T); return ok }

var parityInterfaces = []piface{
	{"registry.ReferenceFetcher", "copy.go:486 (Copy's resolveRoot), content.go (Resolve, Tag, Fetch*)", parityIs[registry.ReferenceFetcher]},
	{"registry.ReferencePusher", "copy.go:523,575 (Copy tags the root by PushReference), content.go (Tag, Push*)", parityIs[registry.ReferencePusher]},
	{"registry.Mounter", "copy.go:362 (MountFrom)", parityIs[registry.Mounter]},
	{"content.PredecessorFinder", "oras.GraphTarget (ExtendedCopy's argument type)", parityIs[content.PredecessorFinder]},
	{"registry.ReferrerLister", "extendedcopy.go:241,332 (ExtendedCopy's FindPredecessors)", parityIs[registry.ReferrerLister]},
	{"ReferenceParser (internal/interfaces)", "content.go:87,145 (Tag, TagN: auth scope hints)", parityIs[interface {
		ParseReference(string) (registry.Reference, error)
	}]},
	{"content.TagResolver", "(part of oras.Target)", parityIs[content.TagResolver]},
	{"content.Deleter", "", parityIs[content.Deleter]},
	{"content.Untagger", "", parityIs[content.Untagger]},
	{"registry.TagLister", "", parityIs[registry.TagLister]},
	{"registry.Repository", "", parityIs[registry.Repository]},
	{"io.Closer", "", parityIs[io.Closer]},
}

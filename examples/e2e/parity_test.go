package e2e

import (
	"context"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/content/memory"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/transfer"
)

// The parity suite: for many graph shapes, transfer.Copy,
// transfer.CopyGraph and oras.Copy / oras.CopyGraph over Wrapped targets
// must leave exactly what plain oras-go leaves in a fresh destination of
// the same kind: the same nodes (fetched back and compared with the
// source), the same tags, the same index.json in an OCI layout, the same
// root returned, and success or failure alike.

var parityShapes = []pshape{
	{name: "image", seedable: true, build: func(t testing.TB) *pgraph {
		// One layer above 1 MiB, so that a registry gets sturdy's chunked
		// upload.
		g := newPGraph(t, "image")
		return g.setRoot(g.image("img", g.layer("big", 1<<20+4096), g.layer("small", 3000)))
	}},
	{name: "multi-platform-index", build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "multi")
		shared := g.layer("shared", 2000)
		var ms []ocispec.Descriptor
		for _, p := range [][2]string{{"linux", "amd64"}, {"linux", "arm64"}, {"windows", "amd64"}} {
			m := g.image(p[0]+"/"+p[1], shared, g.layer(p[0]+p[1], 1500))
			ms = append(ms, parityPlatform(m, p[0], p[1]))
		}
		g.kids = ms
		return g.setRoot(g.index(ocispec.MediaTypeImageIndex, ms, nil))
	}},
	{name: "artifact-with-subject", seedable: true, build: func(t testing.TB) *pgraph {
		// The root is an artifact whose subject is an image: the subject is
		// a successor, so it is copied too.
		g := newPGraph(t, "subject")
		img := g.image("img", g.layer("l", 1000))
		sig := g.blob("application/vnd.sturdy.signature", g.bytesFor("sig", 300))
		art, err := oras.PackManifest(context.Background(), g.src, oras.PackManifestVersion1_1, "application/vnd.sturdy.sig",
			oras.PackManifestOptions{Subject: &img, Layers: []ocispec.Descriptor{sig}})
		if err != nil {
			t.Fatal(err)
		}
		g.nodes[art.Digest] = art
		g.nodes[ocispec.DescriptorEmptyJSON.Digest] = ocispec.DescriptorEmptyJSON
		g.data[ocispec.DescriptorEmptyJSON.Digest] = ocispec.DescriptorEmptyJSON.Data
		g.data[art.Digest] = parityFetchAll(t, g.src, art)
		g.kids = []ocispec.Descriptor{img}
		return g.setRoot(art)
	}},
	{name: "image-with-referrer", build: func(t testing.TB) *pgraph {
		// The root is an image with a referrer in the source (tagged too):
		// oras.Copy copies the image only.
		g := newPGraph(t, "referrer")
		img := g.image("img", g.layer("l", 1000))
		ref := g.manifest(ocispec.MediaTypeImageManifest, g.blob(ocispec.MediaTypeEmptyJSON, []byte("{}")),
			[]ocispec.Descriptor{g.blob("application/vnd.sturdy.sbom", g.bytesFor("sbom", 400))}, &img, nil)
		g.tag(ref, "sbom")
		return g.setRoot(img)
	}},
	{name: "index-with-subject", build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "ixsubject")
		img := g.image("subject", g.layer("s", 700))
		a := g.image("a", g.layer("a", 800))
		return g.setRoot(g.index(ocispec.MediaTypeImageIndex, []ocispec.Descriptor{a}, &img))
	}},
	{name: "config-only", build: func(t testing.TB) *pgraph {
		// A real config blob and an empty layers array.
		g := newPGraph(t, "configonly")
		cfg := g.blob(mtTestConfig, []byte(`{"model":"parity","params":7}`))
		return g.setRoot(g.manifest(ocispec.MediaTypeImageManifest, cfg, []ocispec.Descriptor{}, nil, nil))
	}},
	{name: "no-layers-null", build: func(t testing.TB) *pgraph {
		// The empty JSON config and "layers": null.
		g := newPGraph(t, "nolayers")
		cfg := g.blob(ocispec.MediaTypeEmptyJSON, []byte("{}"))
		return g.setRoot(g.manifest(ocispec.MediaTypeImageManifest, cfg, nil, nil, map[string]string{"k": "v"}))
	}},
	{name: "packed-no-layers", build: func(t testing.TB) *pgraph {
		// oras.PackManifest 1.1 without layers: config and the one layer are
		// the same empty JSON blob, one digest twice in a manifest.
		g := newPGraph(t, "packed")
		m, err := oras.PackManifest(context.Background(), g.src, oras.PackManifestVersion1_1, "application/vnd.sturdy.empty", oras.PackManifestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		g.nodes[m.Digest] = m
		g.data[m.Digest] = parityFetchAll(t, g.src, m)
		g.nodes[ocispec.DescriptorEmptyJSON.Digest] = ocispec.DescriptorEmptyJSON
		g.data[ocispec.DescriptorEmptyJSON.Digest] = ocispec.DescriptorEmptyJSON.Data
		return g.setRoot(m)
	}},
	{name: "duplicate-layers-in-manifest", build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "dup")
		a, b := g.layer("a", 1200), g.layer("b", 900)
		return g.setRoot(g.image("img", a, b, a, a, b))
	}},
	{name: "duplicate-layers-across-manifests", build: func(t testing.TB) *pgraph {
		// Two manifests share a config and two layers.
		g := newPGraph(t, "dupacross")
		cfg := g.blob(ocispec.MediaTypeImageConfig, []byte(`{"shared":true}`))
		a, b := g.layer("a", 1100), g.layer("b", 600)
		m1 := g.manifest(ocispec.MediaTypeImageManifest, cfg, []ocispec.Descriptor{a, b}, nil, nil)
		m2 := g.manifest(ocispec.MediaTypeImageManifest, cfg, []ocispec.Descriptor{b, a, g.layer("c", 500)}, nil, nil)
		g.kids = []ocispec.Descriptor{m1, m2}
		return g.setRoot(g.index(ocispec.MediaTypeImageIndex, []ocispec.Descriptor{m1, m2}, nil))
	}},
	{name: "zero-size-blob", build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "zero")
		return g.setRoot(g.image("img", g.blob(ocispec.MediaTypeImageLayerGzip, []byte{}), g.layer("l", 800)))
	}},
	{name: "foreign-oci-nondistributable", build: func(t testing.TB) *pgraph {
		// A non-distributable layer the source does not hold, with URLs.
		g := newPGraph(t, "foreignoci")
		f := g.absent(mtOCINondistGzip, g.bytesFor("foreign", 5000), "https://example.com/layer.tar.gz")
		return g.setRoot(g.image("img", f, g.layer("l", 700)))
	}},
	{name: "foreign-docker", build: func(t testing.TB) *pgraph {
		// A Windows-style Docker image: a foreign base layer the source
		// does not hold.
		g := newPGraph(t, "foreigndocker")
		cfg := g.blob(mtDockerConfig, []byte(`{"os":"windows","architecture":"amd64"}`))
		f := g.absent(mtDockerForeign, g.bytesFor("base", 6000), "https://mcr.microsoft.com/v2/windows/blobs/x")
		return g.setRoot(g.manifest(mtDockerManifest, cfg, []ocispec.Descriptor{f, g.blob(mtDockerLayer, g.bytesFor("l", 900))}, nil, nil))
	}},
	{name: "foreign-without-urls", build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "foreignnourl")
		f := g.absent(mtOCINondistGzip, g.bytesFor("foreign", 4000))
		return g.setRoot(g.image("img", f, g.layer("l", 700)))
	}},
	{name: "nested-index", build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "nested")
		shared := g.layer("shared", 1000)
		m1 := parityPlatform(g.image("m1", shared, g.layer("1", 400)), "linux", "amd64")
		m2 := parityPlatform(g.image("m2", shared, g.layer("2", 500)), "linux", "arm64")
		inner := g.index(ocispec.MediaTypeImageIndex, []ocispec.Descriptor{m1, m2}, nil)
		m3 := g.image("m3", g.layer("3", 600))
		inner2 := g.index(ocispec.MediaTypeImageIndex, []ocispec.Descriptor{m3}, nil)
		g.kids = []ocispec.Descriptor{inner, m3}
		return g.setRoot(g.index(ocispec.MediaTypeImageIndex, []ocispec.Descriptor{inner, m3, inner2}, nil))
	}},
	{name: "docker-manifest-list", seedable: true, build: func(t testing.TB) *pgraph {
		g := newPGraph(t, "docker")
		shared := g.blob(mtDockerLayer, g.bytesFor("shared", 1000))
		var ms []ocispec.Descriptor
		for _, arch := range []string{"amd64", "arm64"} {
			cfg := g.blob(mtDockerConfig, []byte(`{"os":"linux","architecture":"`+arch+`"}`))
			m := g.manifest(mtDockerManifest, cfg, []ocispec.Descriptor{shared, g.blob(mtDockerLayer, g.bytesFor(arch, 700))}, nil, nil)
			ms = append(ms, parityPlatform(m, "linux", arch))
		}
		return g.setRoot(g.index(mtDockerList, ms, nil))
	}},
	{name: "child-manifest-already-in-destination", build: func(t testing.TB) *pgraph {
		// One child of the index is in the destination already (without its
		// blobs, where the destination allows it): oras-go takes it as
		// complete with its subgraph.
		g := newPGraph(t, "childpresent")
		m1, m2 := g.image("m1", g.layer("1", 700)), g.image("m2", g.layer("2", 800))
		g.kids = []ocispec.Descriptor{m1, m2}
		return g.setRoot(g.index(ocispec.MediaTypeImageIndex, g.kids, nil))
	}, prefill: func(t testing.TB, g *pgraph, dst oras.Target, kind string) {
		parityPushOnly(t, g, dst, kind, g.kids[0])
	}},
	{name: "root-already-in-destination", build: func(t testing.TB) *pgraph {
		// The root manifest is in the destination already (without its
		// blobs, where the destination allows it), untagged: oras.Copy
		// takes it as complete and only tags it.
		g := newPGraph(t, "rootpresent")
		return g.setRoot(g.image("img", g.layer("1", 700), g.layer("2", 900)))
	}, prefill: func(t testing.TB, g *pgraph, dst oras.Target, kind string) {
		parityPushOnly(t, g, dst, kind, g.root)
	}},
	{name: "blob-root", graphOnly: true, build: func(t testing.TB) *pgraph {
		// CopyGraph of a plain blob.
		g := newPGraph(t, "blobroot")
		g.root = g.layer("only", 1500)
		return g
	}},
}

func parityFetchAll(t testing.TB, s *memory.Store, d ocispec.Descriptor) []byte {
	t.Helper()
	b, err := content.FetchAll(context.Background(), s, d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParity: shape x source x destination x method, each compared with
// plain oras-go's result on a fresh destination of the same kind.
func TestParity(t *testing.T) {
	reg := registrytest.New(t)
	dests := parityDests(reg)
	for _, s := range parityShapes {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			g := s.build(t)
			sources := []struct {
				name string
				t    oras.Target
			}{{"memory", g.src}}
			if s.seedable {
				sources = append(sources, struct {
					name string
					t    oras.Target
				}{"registry", paritySeed(t, reg, "parity/src-"+s.name, g)})
			}
			for _, src := range sources {
				for _, d := range dests {
					t.Run(src.name+"-to-"+d.name, func(t *testing.T) {
						var refCopy, refGraph pstate
						if !s.graphOnly {
							refCopy = runParity(t, g, s, src.t, d, plainCopy)
						}
						refGraph = runParity(t, g, s, src.t, d, plainGraph)
						for _, m := range sturdyMethods {
							if !m.graph && s.graphOnly {
								continue
							}
							if m.name == "oras.CopyGraph(Wrap)" && d.name == "registry" {
								// Its paths to a registry (Wrap's Push of
								// manifests) are taken by oras.Copy(Wrap) of
								// the index shapes; the suite stays fast.
								continue
							}
							t.Run(m.name, func(t *testing.T) {
								got := runParity(t, g, s, src.t, d, m)
								if m.graph {
									compareParity(t, m.name, refGraph, got, true)
								} else {
									compareParity(t, m.name, refCopy, got, false)
								}
							})
						}
					})
				}
			}
		})
	}
}

// TestParityWrapInterfaces: Wrap's doc says "The optional interfaces
// oras-go type-asserts are kept: the result implements
// registry.ReferenceFetcher, registry.ReferencePusher, registry.Mounter and
// content.PredecessorFinder exactly when t does". Checked for the targets
// oras-go ships and for every combination of those four. Interfaces
// oras-go never type-asserts are logged, not required.
func TestParityWrapInterfaces(t *testing.T) {
	reg := registrytest.New(t)
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	targets := map[string]oras.Target{
		"memory.Store":       memory.New(),
		"oci.Store":          newLayout(t),
		"file.Store":         fs,
		"*remote.Repository": repo(t, reg, "parity/ifaces"),
	}
	for name, tgt := range parityCombos() {
		targets["combo "+name] = tgt
	}
	for name, tgt := range targets {
		t.Run(name, func(t *testing.T) {
			w := transfer.Wrap(tgt, parityOpts())
			for _, i := range parityInterfaces {
				orig, wrapped := i.has(tgt), i.has(w)
				if orig == wrapped {
					continue
				}
				if i.orasUses != "" {
					t.Errorf("%s: %s on the target, %s on Wrap's result; oras-go type-asserts it at %s",
						i.name, parityHas(orig), parityHas(wrapped), i.orasUses)
				} else {
					t.Logf("%s: %s on the target, %s on Wrap's result (oras-go never asserts it; a caller's own assertion sees the difference)",
						i.name, parityHas(orig), parityHas(wrapped))
				}
			}
		})
	}
}

func parityHas(b bool) string {
	if b {
		return "implemented"
	}
	return "absent"
}

// TestParityWrapRequests: oras.Copy over Wrapped targets takes plain
// oras-go's paths: registry to registry and memory to registry, with
// blobs under sturdy's 1 MiB chunked-upload threshold, it sends the same
// requests, kind by kind.
func TestParityWrapRequests(t *testing.T) {
	g := newPGraph(t, "requests")
	shared := g.layer("shared", 3000)
	m1 := parityPlatform(g.image("m1", shared, g.layer("1", 2000)), "linux", "amd64")
	m2 := parityPlatform(g.image("m2", shared, g.layer("2", 2500)), "linux", "arm64")
	g.setRoot(g.index(ocispec.MediaTypeImageIndex, []ocispec.Descriptor{m1, m2}, nil))
	ctx := context.Background()
	for _, fromRegistry := range []bool{false, true} {
		name := "memory-to-registry"
		if fromRegistry {
			name = "registry-to-registry"
		}
		t.Run(name, func(t *testing.T) {
			reg := registrytest.New(t)
			var src oras.Target = g.src
			if fromRegistry {
				src = paritySeed(t, reg, "src", g)
			}
			run := func(dstName string, wrap bool) registrytest.Stats {
				reg.ResetStats()
				s, d := src, oras.Target(repo(t, reg, dstName))
				if wrap {
					s, d = transfer.Wrap(s, parityOpts()), transfer.Wrap(d, parityOpts())
				}
				if _, err := oras.Copy(ctx, s, srcTag, d, dstTag, oras.DefaultCopyOptions); err != nil {
					t.Fatal(err)
				}
				return reg.Stats()
			}
			plain, wrapped := run("plain", false), run("wrapped", true)
			kinds := map[registrytest.Kind]bool{}
			for k := range plain.Kinds {
				kinds[k] = true
			}
			for k := range wrapped.Kinds {
				kinds[k] = true
			}
			for k := range kinds {
				p, w := plain.Kinds[k], wrapped.Kinds[k]
				if p.Requests != w.Requests {
					t.Errorf("%v: %d requests over Wrap, %d plain", k, w.Requests, p.Requests)
				}
			}
		})
	}
}

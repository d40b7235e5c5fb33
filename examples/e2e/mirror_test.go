package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/transfer"
)

// mirrored is an origin registry holding an artifact and distribution's
// pull-through cache of it.
type mirrored struct {
	origin, cache *registrytest.Registry
	a             *artifact
	src, mirror   *remote.Repository
}

func newMirrored(t *testing.T, name string, sizes ...int) *mirrored {
	t.Helper()
	m := &mirrored{origin: registrytest.New(t)}
	m.cache = registrytest.New(t, registrytest.WithPullThrough(m.origin))
	m.a = newArtifact(t, sizes...)
	m.src = seed(t, m.origin, name, m.a)
	m.mirror = repo(t, m.cache, name)
	return m
}

// warm pulls everything through the cache once, with plain oras-go, so
// that it holds the artifact.
func (m *mirrored) warm(t *testing.T) {
	t.Helper()
	if _, err := oras.Copy(context.Background(), m.mirror, "v1", newLayout(t), "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	// The cache stores a blob once its fetch from the origin is over,
	// which may be after it answered; until then it streams the blob
	// from the origin again. Stored blobs say Accept-Ranges.
	client := m.cache.Client()
	for _, l := range m.a.layers {
		if !waitFor(10*time.Second, func() bool {
			resp, err := client.Head(m.cache.URL() + "/v2/" + m.mirror.Reference.Repository + "/blobs/" + l.Digest.String())
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.Header.Get("Accept-Ranges") == "bytes"
		}) {
			t.Fatalf("the cache did not store %s", l.Digest)
		}
	}
	m.origin.ResetStats()
	m.cache.ResetStats()
}

func blobBytes(r *registrytest.Registry) int64 {
	return r.Stats().Kinds[registrytest.BlobGet].ResponseBodyBytes
}

// A healthy mirror serves the blobs; the origin serves the tag and nothing
// else, and the summary says how much each source served.
func TestMirrorHealthy(t *testing.T) {
	m := newMirrored(t, "healthy", 40*MiB, 3*MiB)
	m.warm(t)
	tr := progress.NewTracker()
	dst := newLayout(t)
	opts := transfer.Options{Retry: fast(3), Observer: tr, Mirrors: []transfer.Mirror{{Name: "cache", Target: m.mirror}}}
	if _, err := transfer.Copy(context.Background(), m.src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, m.a)
	if got := blobBytes(m.origin); got != 0 {
		t.Fatalf("the origin served %d blob bytes", got)
	}
	if got := m.origin.Stats().Kinds[registrytest.ManifestGet].Requests; got != 1 {
		t.Fatalf("the origin served %d manifest GETs, want the tag's", got)
	}
	s := tr.Summary()
	if s.Sources["cache"] < payload(m.a) || s.Sources[transfer.OriginName] != 0 {
		t.Fatalf("sources %v, payload %d", s.Sources, payload(m.a))
	}
	if !strings.Contains(s.String(), "sources  cache 43.0 MiB") {
		t.Fatalf("summary:\n%s", s)
	}
}

// A cold cache fetches from the origin once as it serves: the client
// reads everything from the cache.
func TestMirrorCold(t *testing.T) {
	m := newMirrored(t, "cold", 24*MiB)
	m.origin.ResetStats()
	tr := progress.NewTracker()
	dst := newLayout(t)
	opts := transfer.Options{Retry: fast(3), Observer: tr, Mirrors: []transfer.Mirror{{Target: m.mirror}}}
	if _, err := transfer.Copy(context.Background(), m.src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, m.a)
	host := m.cache.Host()
	if s := tr.Summary(); s.Sources[host] < payload(m.a) || s.Sources[transfer.OriginName] != 0 {
		t.Fatalf("sources %v", s.Sources)
	}
	if r := ratio(blobBytes(m.origin), payload(m.a)); r > 1.01 {
		t.Fatalf("the origin served %.2fx the payload to the cache", r)
	}
}

// The mirror dies at 40% of a 256 MiB blob: the blob finishes from the
// origin, which starts where the mirror stopped.
func TestMirrorDiesMidBlob(t *testing.T) {
	m := newMirrored(t, "dies", 256*MiB)
	m.warm(t)
	size := m.a.layers[0].Size
	go func() {
		for blobBytes(m.cache) < size*4/10 {
			time.Sleep(time.Millisecond)
		}
		m.cache.Close()
	}()
	tr := progress.NewTracker()
	ev := &events{}
	dst := newLayout(t)
	// Several connections: each range that breaks on the dying cache
	// counts, and two breaks set it aside (one is a transient failure).
	opts := transfer.Options{Retry: fast(4), Observer: progress.Multi(tr, ev), Mirrors: []transfer.Mirror{{Name: "cache", Target: m.mirror}},
		PullConnections: transfer.DefaultPullConnections}
	if _, err := transfer.Copy(context.Background(), m.src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, m.a)
	fromCache, fromOrigin := blobBytes(m.cache), blobBytes(m.origin)
	if r := ratio(fromCache+fromOrigin, payload(m.a)); r > 1.05 {
		t.Fatalf("cache %d + origin %d bytes = %.3fx the payload", fromCache, fromOrigin, r)
	}
	// Where the cache stopped depends on how fast Close came; the origin
	// must have sent only what the cache had not.
	s := tr.Summary()
	fromCacheToUs := s.Sources["cache"]
	if fromCacheToUs < size*35/100 || fromCacheToUs+s.Sources[transfer.OriginName] > size*105/100 {
		t.Fatalf("sources %v for %d bytes", s.Sources, size)
	}
	if fromOrigin > size-fromCacheToUs+size*5/100 {
		t.Fatalf("the origin served %d bytes after the cache served %d of %d: it did not continue where the cache stopped", fromOrigin, fromCacheToUs, size)
	}
	if len(ev.notesContaining("set aside")) == 0 {
		t.Fatalf("no note says the mirror was set aside: %v", ev.reasons(progress.Note))
	}
}

// A mirror that lacks the repository (404) or refuses the client (401)
// passes every blob to the origin at once: no retries.
func TestMirrorNotFoundOrUnauthorized(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []registrytest.Option
	}{
		{"404", nil},
		{"401", []registrytest.Option{registrytest.WithBasicAuth("u", "p")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			origin := registrytest.New(t)
			a := newArtifact(t, 24*MiB, 2*MiB)
			src := seed(t, origin, "elsewhere", a)
			other := registrytest.New(t, c.opts...) // not a cache of origin
			mirror, err := remote.NewRepository(other.Host() + "/elsewhere")
			if err != nil {
				t.Fatal(err)
			}
			mirror.PlainHTTP, mirror.Client = true, other.Client()
			var rs retries
			opts := transfer.Options{Retry: fast(3), Mirrors: []transfer.Mirror{{Target: mirror}}}
			opts.Retry.OnRetry = rs.on
			dst := newLayout(t)
			if _, err := transfer.Copy(context.Background(), src, "v1", dst, "", opts); err != nil {
				t.Fatal(err)
			}
			verifyStore(t, dst, a)
			if len(rs.all()) != 0 {
				t.Fatalf("retries: %v", rs.reasons())
			}
			if r := ratio(blobBytes(origin), payload(a)); r < 0.99 || r > 1.01 {
				t.Fatalf("the origin served %.2fx the payload", r)
			}
		})
	}
}

// A mirror that serves a flipped byte: the blob is fetched again from the
// origin and verifies; the mirror is not used again in the copy.
func TestMirrorCorruptByte(t *testing.T) {
	m := newMirrored(t, "corrupt", 4*MiB, 3*MiB)
	m.warm(t)
	first, second := m.a.layers[0], m.a.layers[1]
	m.cache.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: first.Digest, Action: registrytest.Corrupt(1000)})
	secondOnCache := m.cache.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: second.Digest})
	ev := &events{}
	dst := newLayout(t)
	// One blob at a time, the config first and then the layers in order,
	// so the second layer comes after the corruption.
	opts := transfer.Options{Retry: fast(3), Observer: ev, Concurrency: 1, Mirrors: []transfer.Mirror{{Name: "cache", Target: m.mirror}}}
	if _, err := transfer.Copy(context.Background(), m.src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, m.a)
	if len(ev.notesContaining("mirror cache set aside for the rest of the copy: served bytes that failed the digest check")) != 1 {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
	if n := secondOnCache.Applied(); n != 0 {
		t.Fatalf("the cache was asked for the second layer %d times after it served a wrong byte", n)
	}
	if r := ratio(blobBytes(m.origin), payload(m.a)); r < 0.99 {
		t.Fatalf("the origin served %.2fx the payload", r)
	}
}

// The origin is down, the mirror holds everything: a copy by digest
// succeeds; a copy by tag fails and says why.
func TestMirrorOriginDown(t *testing.T) {
	m := newMirrored(t, "down", 24*MiB)
	m.warm(t)
	m.origin.Inject(registrytest.Rule{Kind: registrytest.AnyKind, Action: registrytest.Respond(503)})
	opts := transfer.Options{Retry: fast(2), Mirrors: []transfer.Mirror{{Target: m.mirror}}}
	dst := newLayout(t)
	root, err := transfer.Copy(context.Background(), m.src, m.a.root.Digest.String(), dst, "v1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if root.Digest != m.a.root.Digest {
		t.Fatalf("root %s", root.Digest)
	}
	verifyStore(t, dst, m.a)
	_, err = transfer.Copy(context.Background(), m.src, "v1", newLayout(t), "", opts)
	if err == nil || !strings.Contains(err.Error(), "tags are never resolved on a mirror") {
		t.Fatalf("copy by tag with the origin down: %v", err)
	}
}

// A mirror that hangs costs one StallTimeout for the whole copy, not one
// per blob: it is set aside after the first.
func TestMirrorHangs(t *testing.T) {
	m := newMirrored(t, "hangs", 2*MiB, 2*MiB, 2*MiB, 2*MiB)
	m.warm(t)
	hang := m.cache.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.Stall(0)})
	defer hang.Remove()
	const stall = time.Second
	ev := &events{}
	opts := transfer.Options{Retry: fast(3), StallTimeout: stall, Concurrency: 1, Observer: ev,
		Mirrors: []transfer.Mirror{{Name: "cache", Target: m.mirror}}}
	dst := newLayout(t)
	start := time.Now()
	if _, err := transfer.Copy(context.Background(), m.src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	verifyStore(t, dst, m.a)
	if hang.Applied() != 1 {
		t.Fatalf("the hanging mirror was asked %d times, want once", hang.Applied())
	}
	if took > 2*stall+time.Second {
		t.Fatalf("took %v: more than one StallTimeout (%v)", took, stall)
	}
	if len(ev.notesContaining("set aside")) != 1 {
		t.Fatalf("notes %v", ev.reasons(progress.Note))
	}
}

// A shared OCI layout as a mirror: what it holds comes from it (read
// over several connections' worth of ranges, seeked in its files), what it
// lacks from the origin.
func TestMirrorLayout(t *testing.T) {
	origin := registrytest.New(t)
	a := newArtifact(t, 40*MiB, 2*MiB)
	src := seed(t, origin, "layout", a)
	layout := newLayout(t)
	ctx := context.Background()
	big, small := a.layers[0], a.layers[1]
	rc, err := a.store.Fetch(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	err = layout.Push(ctx, big, rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	origin.ResetStats()
	tr := progress.NewTracker()
	dst := newLayout(t)
	opts := transfer.Options{Retry: fast(3), Observer: tr, Mirrors: []transfer.Mirror{{Target: layout}}}
	if _, err := transfer.Copy(ctx, src, "v1", dst, "", opts); err != nil {
		t.Fatal(err)
	}
	verifyStore(t, dst, a)
	s := tr.Summary()
	if s.Sources["mirror 1"] != big.Size || s.Sources[transfer.OriginName] < small.Size {
		t.Fatalf("sources %v", s.Sources)
	}
	if got := blobBytes(origin); got > small.Size+MiB {
		t.Fatalf("the origin served %d blob bytes; the layout held all but %d", got, small.Size)
	}
}

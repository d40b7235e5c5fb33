package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"

	"github.com/sturdyoci/sturdy/examples/registrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, registrytest.IgnoreLeaks()...) }

// quick keeps retries fast; the rest is production policy.
var quick = []string{"--plain-http", "--initial-backoff", "50ms", "--stall-timeout", "2s"}

// TestRegistryToRegistry copies between two registries, the destination
// behind Basic auth with credentials from a Docker config file, while the
// source resets one download and the destination resets every upload at
// each 2 MiB boundary.
func TestRegistryToRegistry(t *testing.T) {
	src := registrytest.New(t)
	dst := registrytest.New(t, registrytest.WithBasicAuth("sturdy", "s3cret"))
	layer, root := pushArtifact(t, src, "models/a", "v1", 6<<20)

	src.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer.Digest, Times: 1, Action: registrytest.ResetAfter(1 << 20)})
	dst.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetEvery(2 << 20)})

	cfg := dockerConfig(t, dst.Host(), "sturdy", "s3cret")
	args := append(quick, "--registry-config", cfg, src.Reference("models/a", "v1"), dst.Reference("mirror/a", "v2"))
	out, errOut, code := runCopy(t, args...)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"connection reset", "resumed", "copied " + root.Digest.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Log("\n" + out)
	repo, err := dst.Repository("mirror/a")
	if err != nil {
		t.Fatal(err)
	}
	checkCopied(t, repo, "v2", root, layer)
}

// TestLayoutRoundTrip pulls into an OCI layout through resets, then pushes
// the layout to another repository by digest (nothing tagged).
func TestLayoutRoundTrip(t *testing.T) {
	reg := registrytest.New(t)
	layer, root := pushArtifact(t, reg, "models/b", "v1", 5<<20)
	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Action: registrytest.ResetEvery(2 << 20)})

	dir := filepath.Join(t.TempDir(), "layout")
	out, errOut, code := runCopy(t, append(quick, reg.Reference("models/b", "v1"), "oci-layout:"+dir+":v1")...)
	if code != exitOK {
		t.Fatalf("pull: exit %d\n%s\n%s", code, out, errOut)
	}
	store, err := oci.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkCopied(t, store, "v1", root, layer)
	reg.ClearFaults()

	out, errOut, code = runCopy(t, append(quick, "oci-layout:"+dir+"@"+root.Digest.String(), reg.Host()+"/models/c")...)
	if code != exitOK {
		t.Fatalf("push by digest: exit %d\n%s\n%s", code, out, errOut)
	}
	repo, err := reg.Repository("models/c")
	if err != nil {
		t.Fatal(err)
	}
	checkCopied(t, repo, root.Digest.String(), root, layer)
	if _, err := repo.Resolve(context.Background(), "v1"); err == nil {
		t.Error("a copy by digest tagged the destination")
	}
}

// TestFailures: bad arguments exit 2 before anything moves; a copy that
// fails exits 1 and names the failed blob.
func TestFailures(t *testing.T) {
	reg := registrytest.New(t)
	layer, _ := pushArtifact(t, reg, "models/d", "v1", 1<<20)
	dst := "oci-layout:" + t.TempDir()

	for _, args := range [][]string{
		{},
		{reg.Reference("models/d", "v1")},
		{"--concurrency", "0", reg.Reference("models/d", "v1"), dst},
		{"--plain-http", reg.Host() + "/models/d", dst}, // no tag or digest
		{"oci-layout:" + filepath.Join(t.TempDir(), "missing") + ":v1", dst},
		{"not a reference", dst},
	} {
		if _, errOut, code := runCopy(t, args...); code != exitUsage {
			t.Errorf("run(%q) = %d, want %d; stderr:\n%s", args, code, exitUsage, errOut)
		}
	}

	if _, errOut, code := runCopy(t, append(quick, reg.Reference("models/d", "nope"), dst)...); code != exitFailed {
		t.Errorf("missing tag: exit %d, want %d\n%s", code, exitFailed, errOut)
	}

	reg.Inject(registrytest.Rule{Kind: registrytest.BlobGet, Digest: layer.Digest, Action: registrytest.Respond(403)})
	out, errOut, code := runCopy(t, append(quick, reg.Reference("models/d", "v1"), dst+":v1")...)
	if code != exitFailed || !strings.Contains(errOut, layer.Digest.String()) || !strings.Contains(errOut, "403") {
		t.Errorf("403 on a blob: exit %d, want %d with the digest named\nstdout:\n%s\nstderr:\n%s", code, exitFailed, out, errOut)
	}
}

func TestSplitLayoutRef(t *testing.T) {
	for in, want := range map[string][2]string{
		"dir":                {"dir", ""},
		"./dir:v1":           {"./dir", "v1"},
		"/a/b@sha256:abc":    {"/a/b", "sha256:abc"},
		"a:b/c":              {"a:b/c", ""},
		"/tmp/x:y/layout:v2": {"/tmp/x:y/layout", "v2"},
	} {
		if p, r := splitLayoutRef(in); p != want[0] || r != want[1] {
			t.Errorf("splitLayoutRef(%q) = %q, %q; want %q", in, p, r, want)
		}
	}
}

func runCopy(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// pushArtifact pushes a random layer of size bytes under a manifest
// tagged tag, with plain oras-go (no faults are armed yet).
func pushArtifact(t *testing.T, reg *registrytest.Registry, repoName, tag string, size int) (layer, root ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	repo, err := reg.Repository(repoName)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	layer = content.NewDescriptorFromBytes("application/vnd.example.weights", data)
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: "weights.bin"}
	if err := repo.Push(ctx, layer, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	root, err = oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.example.model",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, root, tag); err != nil {
		t.Fatal(err)
	}
	return layer, root
}

// checkCopied resolves ref in target and reads the layer back, verified.
func checkCopied(t *testing.T, target oras.ReadOnlyTarget, ref string, root, layer ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	got, err := target.Resolve(ctx, ref)
	if err != nil || got.Digest != root.Digest {
		t.Fatalf("resolve %q = %s, %v; want %s", ref, got.Digest, err, root.Digest)
	}
	if _, err := content.FetchAll(ctx, target, layer); err != nil {
		t.Errorf("layer: %v", err)
	}
}

// dockerConfig writes a Docker config with Basic credentials for host.
func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	cfg := map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStateDirFlag: --state-dir reaches the copy, which empties it once
// every blob is in place.
func TestStateDirFlag(t *testing.T) {
	reg := registrytest.New(t)
	layer, root := pushArtifact(t, reg, "models/s", "v1", 3<<20)
	state := filepath.Join(t.TempDir(), "state")
	dir := filepath.Join(t.TempDir(), "layout")
	out, errOut, code := runCopy(t, append(quick, "--state-dir", state, reg.Reference("models/s", "v1"), "oci-layout:"+dir+":v1")...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	store, err := oci.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkCopied(t, store, "v1", root, layer)
	if fi, err := os.Stat(filepath.Join(state, "blobs")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory not created 0700: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(state, "blobs", "*", "*"))
	if len(left) > 0 {
		t.Fatalf("state left after a completed copy: %v", left)
	}
}

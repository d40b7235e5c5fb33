package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// layoutPrefix marks an OCI image layout on disk instead of a registry.
const layoutPrefix = "oci-layout:"

// endpoint is one side of a copy.
type endpoint struct {
	target oras.Target
	ref    string // tag or digest; "" when the argument named none
	name   string // the argument, for messages
}

// openEndpoint opens a registry reference (host/repo:tag, host/repo@digest)
// or an OCI layout (oci-layout:PATH, oci-layout:PATH:tag,
// oci-layout:PATH@digest). A source layout must exist; a destination
// layout is created. Registry repositories get client and plainHTTP.
func openEndpoint(arg string, source bool, client *auth.Client, plainHTTP bool) (endpoint, error) {
	if rest, ok := strings.CutPrefix(arg, layoutPrefix); ok {
		return openLayout(arg, rest, source)
	}
	repo, err := remote.NewRepository(arg)
	if err != nil {
		return endpoint{}, fmt.Errorf("%q is neither a registry reference (host/repo:tag) nor %sPATH: %w", arg, layoutPrefix, err)
	}
	repo.Client = client
	repo.PlainHTTP = plainHTTP
	return endpoint{target: repo, ref: repo.Reference.Reference, name: arg}, nil
}

func openLayout(arg, spec string, source bool) (endpoint, error) {
	path, ref := splitLayoutRef(spec)
	if path == "" {
		return endpoint{}, fmt.Errorf("%q: no path after %s", arg, layoutPrefix)
	}
	if ref != "" && strings.Contains(ref, ":") {
		if _, err := digest.Parse(ref); err != nil {
			return endpoint{}, fmt.Errorf("%q: %w", arg, err)
		}
	}
	if source {
		// oci.New would create an empty layout and report "not found"
		// for the tag; a missing directory deserves a clearer error.
		if _, err := os.Stat(path); err != nil {
			return endpoint{}, fmt.Errorf("source layout: %w", err)
		}
	}
	store, err := oci.New(path)
	if err != nil {
		return endpoint{}, fmt.Errorf("open layout %s: %w", path, err)
	}
	return endpoint{target: store, ref: ref, name: arg}, nil
}

// splitLayoutRef splits PATH[:tag|@digest]. A colon counts as the tag
// separator only after the last slash, so that "./dir:v1" is a tag and
// "a:b/c" is a path.
func splitLayoutRef(s string) (path, ref string) {
	if i := strings.LastIndex(s, "@"); i > strings.LastIndex(s, "/") {
		return s[:i], s[i+1:]
	}
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// isDigest reports whether ref is a digest rather than a tag.
func isDigest(ref string) bool {
	_, err := digest.Parse(ref)
	return err == nil
}

var errNoRef = errors.New("the source needs a tag or a digest (host/repo:tag, host/repo@sha256:..., oci-layout:PATH:tag)")

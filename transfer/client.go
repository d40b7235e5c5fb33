package transfer

import (
	"net/http"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// NewClient returns an oras-go auth client with no retrying transport
// underneath, so that sturdy's per-blob loop is the only retry layer (see
// "One retry layer" in the package doc). cred may be nil for anonymous
// access; base may be nil for http.DefaultClient.
func NewClient(base *http.Client, cred auth.CredentialFunc) *auth.Client {
	if base == nil {
		base = http.DefaultClient
	}
	return &auth.Client{Client: base, Cache: auth.NewCache(), Credential: cred}
}

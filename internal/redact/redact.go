// Package redact removes secrets from URLs before they reach an error or a log.
//
// Registries put upload session state (distribution's `_state`, a signed JWT)
// and storage back ends put pre-signed credentials (S3's X-Amz-Signature,
// GCS's X-Goog-Signature, Azure's sig) into query strings. Any of them in an
// error message lets a reader of the log resume or hijack the transfer.
package redact

import (
	"net/url"
	"strings"
)

// Placeholder replaces every redacted value.
const Placeholder = "REDACTED"

// URL returns u as a string with user info and the values of sensitive query
// parameters replaced by Placeholder. Non-sensitive parameters such as
// `digest` are kept because they help debugging. A nil URL gives "".
func URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	if c.User != nil {
		c.User = url.User(Placeholder)
	}
	if c.RawQuery != "" {
		q, err := url.ParseQuery(c.RawQuery)
		if err != nil {
			// A query we cannot parse may hide anything: drop it whole.
			c.RawQuery = Placeholder
		} else {
			for k, vs := range q {
				if sensitive(k) {
					for i := range vs {
						vs[i] = Placeholder
					}
				}
			}
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}

// String parses s as a URL and redacts it; text that is not a URL is
// returned unchanged.
func String(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme == "" && u.RawQuery == "") {
		return s
	}
	return URL(u)
}

func sensitive(key string) bool {
	k := strings.ToLower(key)
	switch k {
	case "_state", "state", "token", "access_token", "refresh_token", "password",
		"sig", "signature", "se", "sp", "sv", "skoid", "sktid", "sks", "skv":
		return true
	}
	return strings.HasPrefix(k, "x-amz-") || strings.HasPrefix(k, "x-goog-") ||
		strings.Contains(k, "signature") || strings.Contains(k, "credential") ||
		strings.Contains(k, "token") || strings.Contains(k, "secret")
}

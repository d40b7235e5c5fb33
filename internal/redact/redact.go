// Package redact is sturdy's one redaction policy: what it removes from
// every URL and every error text before they reach an error message, a
// progress event, a log line or RetryInfo.
//
// Registries put upload session state (distribution's _state, a signed
// token) into upload URLs, and storage back ends put pre-signed
// credentials into the query of the URLs a blob GET is redirected to. Each
// vendor names those parameters differently (X-Amz-Signature, sig,
// X-Goog-Signature, security-token, x-oss-signature, q-signature,
// x-cos-security-token, ...) and a list of names is never complete. So the
// policy is the other way round: every query value is secret unless its
// name is on a short list of parameters of the OCI distribution protocol
// that carry no secret and help debugging (digest, mount, from, n, last).
// User info in a URL is always removed.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Placeholder replaces every redacted value.
const Placeholder = "REDACTED"

// harmless are the query parameters whose values are kept: the OCI
// distribution protocol's own, which name content, never a credential.
var harmless = map[string]bool{
	"digest": true, // PUT ?digest= of an upload, a public content address
	"mount":  true, // cross-repository mount: a digest
	"from":   true, // cross-repository mount: a repository name
	"n":      true, // tag list page size
	"last":   true, // tag list pagination
}

// URL returns u as a string with user info and every query value not known
// to be harmless replaced by Placeholder. A nil URL gives "".
func URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	if c.User != nil {
		c.User = url.User(Placeholder)
	}
	c.RawQuery = query(c.RawQuery)
	c.ForceQuery = false
	// A fragment is never sent to a server; it has no place in a log.
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// query redacts a raw query string, keeping the order of its parameters.
func query(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if !hasValue {
			// A bare name is a value in itself to some back ends (a
			// token passed as "?TOKEN").
			if name != "" && !harmless[strings.ToLower(name)] {
				parts[i] = Placeholder
			}
			continue
		}
		if !harmless[strings.ToLower(name)] {
			parts[i] = k + "=" + Placeholder
		}
	}
	return strings.Join(parts, "&")
}

// String redacts s if it is a URL (absolute, or a path with a query) and
// returns any other text through Text.
func String(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme == "" && u.RawQuery == "" && u.User == nil) {
		return Text(s)
	}
	return URL(u)
}

var (
	// userInfo is the user info of any URL in a text: scheme://user:pass@.
	userInfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s"'<>]*@`)
	// queryText is a query string anywhere in a text: after a '?', up to
	// whitespace, a quote, a bracket or a fragment.
	queryText = regexp.MustCompile(`\?[^\s"'<>#` + "`" + `]+`)
)

// Text redacts every URL and query string inside a free text, such as an
// error message that quotes a request URL ("Get \"https://...\": dial tcp
// ...: connection refused"). Text without a '?' or user info is returned
// unchanged.
func Text(s string) string {
	if !strings.Contains(s, "?") && !strings.Contains(s, "@") {
		return s
	}
	s = userInfo.ReplaceAllString(s, "${1}"+Placeholder+"@")
	var b strings.Builder
	last := 0
	for _, m := range queryText.FindAllStringIndex(s, -1) {
		q := s[m[0]:m[1]]
		// A query quoted inside a message may end in punctuation that is
		// not part of it; keep that outside.
		trail := ""
		for len(q) > 1 && strings.ContainsRune(".,;:)]}", rune(q[len(q)-1])) {
			trail = q[len(q)-1:] + trail
			q = q[:len(q)-1]
		}
		// Without a '=', only a URL's query is one ("https://cdn/o?TOKEN");
		// in prose, "what?!" is punctuation.
		if !strings.Contains(q, "=") && !inURL(s[:m[0]]) {
			continue
		}
		b.WriteString(s[last:m[0]])
		b.WriteString("?" + query(q[1:]) + trail)
		last = m[0] + len(q) + len(trail)
	}
	b.WriteString(s[last:])
	return b.String()
}

// inURL reports whether the text before a '?' ends in a URL or a path:
// its last word has a scheme or starts with '/'.
func inURL(before string) bool {
	word := before[strings.LastIndexAny(before, " \t\n\"'<>`(")+1:]
	return strings.Contains(word, "://") || strings.HasPrefix(word, "/")
}

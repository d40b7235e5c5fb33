package httpblob

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
)

func responseWithLocation(reqURL, location string) *http.Response {
	u, _ := url.Parse(reqURL)
	h := http.Header{}
	if location != "" {
		h.Set("Location", location)
	}
	return &http.Response{Header: h, Request: &http.Request{URL: u}}
}

// The guards oras-go has (GHSA-jxpm-75mh-9fp7): an upload Location must
// stay on the registry's host and must not downgrade https to http.
func TestFollowLocationGuards(t *testing.T) {
	cases := []struct {
		name, origin, location string
		want                   error
		wantURL                string
	}{
		{"relative", "https://r.example:5000/v2/m/blobs/uploads/", "/v2/m/blobs/uploads/abc?_state=s", nil, "https://r.example:5000/v2/m/blobs/uploads/abc?_state=s"},
		{"same host absolute", "https://r.example/v2/m/blobs/uploads/", "https://r.example:443/v2/m/blobs/uploads/abc", nil, "https://r.example:443/v2/m/blobs/uploads/abc"},
		{"other host", "https://r.example/v2/m/blobs/uploads/", "https://evil.example/v2/m/blobs/uploads/abc", ErrUnsafeLocation, ""},
		{"other port", "http://127.0.0.1:5000/v2/m/blobs/uploads/", "http://127.0.0.1:6000/u", ErrUnsafeLocation, ""},
		{"downgrade", "https://r.example/v2/m/blobs/uploads/", "http://r.example:443/v2/m/blobs/uploads/abc", ErrUnsafeLocation, ""},
		{"missing", "https://r.example/v2/m/blobs/uploads/", "", ErrChunkedUnsupported, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			origin, _ := url.Parse(c.origin)
			up := &Upload{origin: origin}
			err := up.follow(responseWithLocation(c.origin, c.location))
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("follow(%q) = %v, want %v", c.location, err, c.want)
			}
			if c.want == nil && up.location.String() != c.wantURL {
				t.Fatalf("location = %s, want %s", up.location, c.wantURL)
			}
		})
	}
}

// A Location kept by an earlier process passes the same guards as one a
// registry answers.
func TestResumeUploadGuards(t *testing.T) {
	https := &Repo{}
	https.Ref.Registry, https.Ref.Repository = "r.example:5000", "m"
	plain := &Repo{PlainHTTP: true}
	plain.Ref = https.Ref
	cases := []struct {
		name string
		repo *Repo
		loc  string
		ok   bool
	}{
		{"same host", https, "https://r.example:5000/v2/m/blobs/uploads/u?_state=s", true},
		{"plain http", plain, "http://r.example:5000/v2/m/blobs/uploads/u", true},
		{"other host", https, "https://evil.example:5000/v2/m/blobs/uploads/u", false},
		{"other port", https, "https://r.example:6000/v2/m/blobs/uploads/u", false},
		{"downgrade", https, "http://r.example:5000/v2/m/blobs/uploads/u", false},
		{"relative", https, "/v2/m/blobs/uploads/u", false},
		{"garbage", https, "::", false},
	}
	for _, c := range cases {
		up, err := c.repo.ResumeUpload(c.loc)
		if c.ok != (err == nil) {
			t.Fatalf("%s: ResumeUpload(%q) = %v", c.name, c.loc, err)
		}
		if c.ok && up.Location() != c.loc {
			t.Fatalf("%s: Location() = %q", c.name, up.Location())
		}
		if !c.ok && !errors.Is(err, ErrUnsafeLocation) {
			t.Fatalf("%s: %v, want ErrUnsafeLocation", c.name, err)
		}
	}
}

package redact

import (
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	cases := []struct {
		in      string
		keep    []string
		mustNot []string
	}{
		{"http://127.0.0.1:5000/v2/a/blobs/uploads/abc?_state=SECRETJWT&digest=sha256%3A00",
			[]string{"digest=sha256%3A00", "/v2/a/blobs/uploads/abc", "_state=REDACTED"}, []string{"SECRETJWT"}},
		{"https://bucket.s3.amazonaws.com/x?X-Amz-Signature=SIG&X-Amz-Credential=CRED&partNumber=2",
			[]string{"partNumber=2"}, []string{"SIG", "CRED"}},
		{"https://user:hunter2@example.com/v2/", []string{"example.com"}, []string{"hunter2", "user"}},
		{"https://acct.blob.core.windows.net/c/b?sig=AZSIG&se=2026&sp=r", nil, []string{"AZSIG"}},
		{"http://h/p?a=%zz", []string{"REDACTED"}, []string{"%zz"}},
	}
	for _, c := range cases {
		u, err := url.Parse(c.in)
		if err != nil {
			// The malformed-query case still parses as a URL.
			t.Fatalf("parse %q: %v", c.in, err)
		}
		got := URL(u)
		for _, k := range c.keep {
			if !strings.Contains(got, k) {
				t.Errorf("URL(%q) = %q, want it to contain %q", c.in, got, k)
			}
		}
		for _, m := range c.mustNot {
			if strings.Contains(got, m) {
				t.Errorf("URL(%q) = %q leaks %q", c.in, got, m)
			}
		}
	}
	if URL(nil) != "" {
		t.Error("URL(nil) should be empty")
	}
	if String("not a url at all") != "not a url at all" {
		t.Error("String changed plain text")
	}
	if strings.Contains(String("http://h/u?_state=S"), "=S") {
		t.Error("String did not redact")
	}
}

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
			[]string{"partNumber=REDACTED", "X-Amz-Signature=REDACTED"}, []string{"SIG", "CRED"}},
		{"https://user:hunter2@example.com/v2/", []string{"example.com"}, []string{"hunter2", "user"}},
		{"https://acct.blob.core.windows.net/c/b?sig=AZSIG&se=2026&sp=r", nil, []string{"AZSIG"}},
		{"http://h/p?a=%zz", []string{"a=REDACTED"}, []string{"%zz"}},
		// Vendors whose names no fixed list had: every value is secret.
		{"https://b.oss-cn-hangzhou.aliyuncs.com/o?security-token=OSSTOK&x-oss-signature=OSSSIG&x-oss-date=1",
			nil, []string{"OSSTOK", "OSSSIG"}},
		{"https://b.cos.ap-guangzhou.myqcloud.com/o?q-signature=COSSIG&x-cos-security-token=COSTOK",
			nil, []string{"COSSIG", "COSTOK"}},
		{"https://cdn.example/o?Expires=1&Policy=POL&Key-Pair-Id=KP&verify=V1", nil, []string{"POL", "KP", "V1"}},
		{"https://cdn.example/o?BARETOKEN", nil, []string{"BARETOKEN"}},
		{"https://r.example/v2/a/blobs/uploads/?mount=sha256:aa&from=lib/b", []string{"mount=sha256:aa", "from=lib/b"}, nil},
	}
	for _, c := range cases {
		u, err := url.Parse(c.in)
		if err != nil {
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
		// The same URL inside a message is redacted the same way.
		msg := Text(`Get "` + c.in + `": dial tcp 10.0.0.1:443: connect: connection refused`)
		for _, m := range c.mustNot {
			if strings.Contains(msg, m) {
				t.Errorf("Text(...%q...) = %q leaks %q", c.in, msg, m)
			}
		}
		if !strings.HasSuffix(msg, "connection refused") {
			t.Errorf("Text lost the error's tail: %q", msg)
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

func TestText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain message", "plain message"},
		{"what? nothing", "what? nothing"},
		{"what?! really?yes", "what?! really?yes"},
		{`GET "https://cdn.example/o?BARETOKEN": refused`, `GET "https://cdn.example/o?REDACTED": refused`},
		{"path /v2/a/blobs/uploads/u?TOKEN failed", "path /v2/a/blobs/uploads/u?REDACTED failed"},
		{`PATCH "/v2/a/blobs/uploads/u?_state=JWT": reset`, `PATCH "/v2/a/blobs/uploads/u?_state=REDACTED": reset`},
		{"GET https://s3/x?X-Amz-Signature=abc.", "GET https://s3/x?X-Amz-Signature=REDACTED."},
		{"dial https://u:p@host/v2/: refused", "dial https://REDACTED@host/v2/: refused"},
		{"PUT /u?digest=sha256:ab&_state=s", "PUT /u?digest=sha256:ab&_state=REDACTED"},
	}
	for _, c := range cases {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzText(f *testing.F) {
	for _, s := range []string{"https://h/p?sig=S&digest=d", "?a=b", "x://u:p@h", "??==&&", "a?b=c#d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Text(s)
		// Idempotent: redacting twice changes nothing more.
		if Text(out) != out {
			t.Fatalf("Text not idempotent: %q -> %q -> %q", s, out, Text(out))
		}
		// Nothing after "sig=" survives unless it was already redacted.
		if i := strings.Index(out, "?sig="); i >= 0 && !strings.HasPrefix(out[i+5:], Placeholder) {
			t.Fatalf("Text(%q) = %q leaks a sig value", s, out)
		}
	})
}

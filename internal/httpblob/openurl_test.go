package httpblob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
)

// The ranged-read protocol against net/http's own Range implementation
// (http.ServeContent), a real server rather than a scripted one; a thin
// handler around it plays the servers that ignore or garble Range. The
// upload protocol needs a registry: examples/e2e runs it against two.
func TestOpenURL(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789"), 1000)
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	serve := func(content []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Key") != "k" {
				http.Error(w, "no key", http.StatusForbidden)
				return
			}
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(content))
		}
	}
	cases := []struct {
		name    string
		handler http.Handler
		offset  int64
		want    error // nil: the bytes from offset
		skip    bool  // ErrRangeIgnored: the whole blob comes back
	}{
		{"whole", serve(blob), 0, nil, false},
		{"resume", serve(blob), 4321, nil, false},
		{"last byte", serve(blob), int64(len(blob) - 1), nil, false},
		{"range ignored", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Range")
			serve(blob)(w, r)
		}), 4321, ErrRangeIgnored, true},
		// A server holding less than the descriptor says refuses a range
		// past its end: 416.
		{"range refused", serve(blob[:1000]), 4321, ErrRangeRefused, false},
		{"wrong start", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Range", "bytes=1-")
			serve(blob)(w, r)
		}), 4321, ErrBadContentRange, false},
		{"not found", http.NotFoundHandler(), 0, errdef.ErrNotFound, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			rc, err := OpenURL(context.Background(), srv.Client(), srv.URL+"/blob", http.Header{"X-Key": {"k"}}, desc, c.offset)
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if c.want == nil && err != nil {
				t.Fatal(err)
			}
			if rc == nil {
				return
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			want := blob[c.offset:]
			if c.skip {
				want = blob
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, want %d", len(got), len(want))
			}
		})
	}
	if _, err := OpenURL(context.Background(), http.DefaultClient, "http://127.0.0.1:1/x", nil, desc, desc.Size); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("offset at the end: %v", err)
	}
}

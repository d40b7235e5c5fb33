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
		end     int64 // 0: the end of the blob
		want    error // nil: the bytes [offset, end)
		skip    bool  // ErrRangeIgnored: the whole blob comes back
	}{
		{"whole", serve(blob), 0, 0, nil, false},
		{"resume", serve(blob), 4321, 0, nil, false},
		{"last byte", serve(blob), int64(len(blob) - 1), 0, nil, false},
		{"first span", serve(blob), 0, 1000, nil, false},
		{"middle span", serve(blob), 4321, 5000, nil, false},
		{"one byte span", serve(blob), 7, 8, nil, false},
		{"span ignored", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Range")
			serve(blob)(w, r)
		}), 0, 1000, ErrRangeIgnored, true},
		// A server that sends the rest of the blob for a closed range.
		{"span widened", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Range", "bytes=4321-")
			serve(blob)(w, r)
		}), 4321, 5000, ErrBadContentRange, false},
		{"range ignored", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Range")
			serve(blob)(w, r)
		}), 4321, 0, ErrRangeIgnored, true},
		// A server holding less than the descriptor says refuses a range
		// past its end: 416.
		{"range refused", serve(blob[:1000]), 4321, 0, ErrRangeRefused, false},
		{"wrong start", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Range", "bytes=1-")
			serve(blob)(w, r)
		}), 4321, 0, ErrBadContentRange, false},
		{"not found", http.NotFoundHandler(), 0, 0, errdef.ErrNotFound, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			end := c.end
			if end == 0 {
				end = desc.Size
			}
			rc, err := OpenURL(context.Background(), srv.Client(), srv.URL+"/blob", http.Header{"X-Key": {"k"}}, desc, c.offset, end)
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
			want := blob[c.offset:end]
			if c.skip {
				want = blob
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, want %d", len(got), len(want))
			}
		})
	}
	if _, err := OpenURL(context.Background(), http.DefaultClient, "http://127.0.0.1:1/x", nil, desc, desc.Size, desc.Size); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("offset at the end: %v", err)
	}
}

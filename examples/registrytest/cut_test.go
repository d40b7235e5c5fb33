package registrytest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// countingReader counts what the client's transport took from a body: the
// bytes the client wrote into the connection.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// patchFrom sends data[start:] as one PATCH and reports how many bytes
// the client wrote before the request ended.
func patchFrom(c *http.Client, u string, start int, data []byte) (*http.Response, int64, error) {
	body := &countingReader{r: bytes.NewReader(data[start:])}
	req, err := http.NewRequest(http.MethodPatch, u, body)
	if err != nil {
		return nil, 0, err
	}
	req.ContentLength = int64(len(data) - start)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", start, len(data)-1))
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, body.n.Load(), err
}

// rangeEnd reads an upload's "0-N" Range header as N+1 bytes.
func rangeEnd(t *testing.T, v string) int64 {
	t.Helper()
	last, err := strconv.ParseInt(strings.TrimPrefix(v, "0-"), 10, 64)
	if err != nil || !strings.HasPrefix(v, "0-") {
		t.Fatalf("upload Range %q", v)
	}
	return last + 1
}

// A realistic cut resets the client at once, while the registry is still
// to receive the bytes in flight: right after the reset the registry holds
// at most the bytes before the cut (a status query on distribution sees
// that stale offset; a PATCH from it on ggcr waits for the lock and is
// refused), and once the handler has seen its body fail it holds the cut
// offset plus the in-flight bytes.
func TestRealisticCut(t *testing.T) {
	const (
		inFlight = 256 << 10
		lag      = 300 * time.Millisecond
		cutAt    = 1<<20 + 123
	)
	for _, impl := range Implementations() {
		for _, tc := range []struct {
			name string
			opts []Option
		}{{"http", nil}, {"tls", []Option{WithTLS()}}} {
			t.Run(impl.String()+"/"+tc.name, func(t *testing.T) {
				r := New(t, append(tc.opts, WithImplementation(impl), WithRealisticCuts(inFlight, lag))...)
				data := randomBytes(4<<20, 30)
				c := r.Client()
				u := startUpload(t, r, "cut")
				r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: ResetAfter(cutAt)})

				start := time.Now()
				_, wrote, err := patchFrom(c, u, 0, data)
				if !isUploadReset(err) {
					t.Fatalf("PATCH: got %v, want a connection reset", err)
				}
				if e := time.Since(start); e > lag {
					t.Errorf("the client saw the reset after %v, later than the registry's lag of %v", e, lag)
				}

				if r.Capabilities().UploadStatus {
					got, _ := uploadStatus(t, r, u)
					if stale := rangeEnd(t, got); stale > cutAt || stale < cutAt-64<<10 {
						t.Errorf("status right after the cut: %d bytes, want the stale offset %d (less what is buffered)", stale, cutAt)
					}
				} else {
					// The client's best guess, cutAt, is refused once the
					// cut PATCH lets go of ggcr's lock (not before lag after
					// the cut): the registry kept more.
					resp, err := send(c, http.MethodPatch, u, []byte{}, "Content-Type", "application/octet-stream",
						"Content-Range", fmt.Sprintf("%d-%d", cutAt, cutAt-1))
					if err != nil || resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
						t.Fatalf("PATCH from the cut offset: %v %v, want 416", resp, err)
					}
					if e := time.Since(start); e < lag {
						t.Errorf("PATCH from the cut offset answered %v after the cut PATCH began: it did not wait for the cut handler", e)
					}
				}

				if err := r.SettleCuts(testContext(t)); err != nil {
					t.Fatal(err)
				}
				const kept = cutAt + inFlight
				ks := r.Stats().Kinds[UploadPatch]
				if ks.RequestBodyBytes != kept || ks.LateBodyBytes != inFlight || ks.Cuts != 1 {
					t.Errorf("UploadPatch stats %+v; want %d body bytes, %d of them late, 1 cut", ks, kept, inFlight)
				}
				if wrote < kept {
					t.Errorf("the client wrote %d bytes, the registry kept %d", wrote, kept)
				}
				t.Logf("cut at %d: client wrote %d bytes, registry kept %d (%d after the client's reset)", cutAt, wrote, kept, ks.LateBodyBytes)

				// The upload goes on from what the registry kept.
				u = holds(t, r, u, kept)
				resp, _, err := patchFrom(c, u, kept, data)
				if err != nil || resp.StatusCode != http.StatusAccepted {
					t.Fatalf("PATCH the rest: %v %v", resp, err)
				}
				resp, err = send(c, http.MethodPut, withQuery(location(t, r, resp), "digest", digest.FromBytes(data).String()), nil)
				if err != nil || resp.StatusCode != http.StatusCreated {
					t.Fatalf("PUT: %v %v", resp, err)
				}
			})
		}
	}
}

// A cut that comes when the rest of the body is already in flight leaves
// the registry with the whole body: it completes the PATCH, and only the
// client, reset, does not know.
func TestRealisticCutAfterLastByte(t *testing.T) {
	eachImpl(t, func(t *testing.T, impl Implementation) {
		r := New(t, WithImplementation(impl), WithRealisticCuts(0, 20*time.Millisecond))
		data := randomBytes(1<<20, 31)
		u := startUpload(t, r, "cut-end")
		r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: ResetAfter(int64(len(data) - 1000))})
		if _, _, err := patchFrom(r.Client(), u, 0, data); !isUploadReset(err) {
			t.Fatalf("PATCH: got %v, want a connection reset", err)
		}
		if err := r.SettleCuts(testContext(t)); err != nil {
			t.Fatal(err)
		}
		holds(t, r, u, int64(len(data)))
		if ks := r.Stats().Kinds[UploadPatch]; ks.LateBodyBytes != 1000 {
			t.Errorf("UploadPatch stats %+v, want 1000 late bytes", ks)
		}
	})
}

// ResetEvery under realistic cuts: each PATCH is cut at the next period,
// the registry keeps up to DefaultInFlight more, and a client that asks
// (or, on ggcr, probes) where it stands and goes on from there finishes
// with every byte received about once. How many bytes are in flight at a
// cut is what the client had written within snapshotWindow: all of
// DefaultInFlight on an idle machine, less on a loaded one; LateBodyBytes
// says how many.
func TestRealisticResetEvery(t *testing.T) {
	eachImpl(t, func(t *testing.T, impl Implementation) {
		r := New(t, WithImplementation(impl), WithRealisticCuts(0, 20*time.Millisecond))
		data := randomBytes(4<<20, 32)
		c := r.Client()
		u := startUpload(t, r, "cut-every")
		f := r.Inject(Rule{Kind: UploadPatch, Action: ResetEvery(1 << 20)})
		held, late := int64(0), int64(0)
		for held < int64(len(data)) {
			resp, _, err := patchFrom(c, u, int(held), data)
			if err == nil {
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("PATCH from %d: %v", held, resp)
				}
				u = location(t, r, resp)
				break
			}
			if err := r.SettleCuts(testContext(t)); err != nil {
				t.Fatal(err)
			}
			// Every cut keeps the period's bytes plus those in flight.
			inFlight := r.Stats().Kinds[UploadPatch].LateBodyBytes - late
			late += inFlight
			if inFlight > DefaultInFlight {
				t.Fatalf("%d bytes in flight at a cut, want at most %d", inFlight, DefaultInFlight)
			}
			held = min((held/(1<<20)+1)<<20+inFlight, int64(len(data)))
			u = holds(t, r, u, held)
		}
		f.Remove()
		resp, err := send(c, http.MethodPut, withQuery(u, "digest", digest.FromBytes(data).String()), nil)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT: %v %v", resp, err)
		}
		// Four cuts: at 1, 2 and 3 MiB, and at 4 MiB, the end of the body,
		// which arrives whole: that PATCH completes though its client is
		// reset.
		ks := r.Stats().Kinds[UploadPatch]
		if ks.RequestBodyBytes != int64(len(data)) || ks.Cuts != 4 || ks.LateBodyBytes != late || late == 0 {
			t.Errorf("UploadPatch stats %+v", ks)
		}
	})
}

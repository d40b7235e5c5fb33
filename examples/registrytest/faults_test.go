package registrytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

// isReset reports whether err is the client's view of a TCP RST.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isUploadReset is isReset for a client still writing a body when the RST
// comes: its transport may notice on the read side first and close the
// connection under its own writer.
func isUploadReset(err error) bool {
	return isReset(err) || errors.Is(err, net.ErrClosed)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestResetAfter(t *testing.T) { eachImpl(t, testResetAfter) }

func testResetAfter(t *testing.T, impl Implementation) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"http", nil}, {"tls", []Option{WithTLS()}}} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(t, append(tc.opts, WithImplementation(impl))...)
			data := randomBytes(4<<20, 10)
			d := pushBlob(t, r, "reset", data).Digest
			r.ResetStats()

			const n = 1<<20 + 123
			f := r.Inject(Rule{Kind: BlobGet, Digest: d, Times: 1, Action: ResetAfter(n)})
			resp := get(t, r.Client(), r, "reset", d)
			got, err := io.ReadAll(resp.Body)
			if !isReset(err) {
				t.Fatalf("read error %v, want connection reset", err)
			}
			if len(got) != n || !bytes.Equal(got, data[:n]) {
				t.Fatalf("read %d bytes before the reset, want %d", len(got), n)
			}
			if f.Applied() != 1 {
				t.Errorf("Applied = %d", f.Applied())
			}
			ks := r.Stats().Kinds[BlobGet]
			if ks.ResponseBodyBytes != n || ks.Statuses[200] != 1 {
				t.Errorf("BlobGet stats %+v", ks)
			}

			// The rule is spent: the next GET is whole.
			if got, err := io.ReadAll(get(t, r.Client(), r, "reset", d).Body); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("GET after the fault: %d bytes, %v", len(got), err)
			}
		})
	}
}

// closedRange is the Range header every implementation serves (ggcr
// answers the open form "bytes=N-" with 416).
func closedRange(start, size int) string { return fmt.Sprintf("bytes=%d-%d", start, size-1) }

func TestResetEvery(t *testing.T) { eachImpl(t, testResetEvery) }

func testResetEvery(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(4<<20, 11)
	d := pushBlob(t, r, "every", data).Digest
	r.Inject(Rule{Kind: BlobGet, Action: ResetEvery(1 << 20)})

	for _, start := range []int64{0, 1500000, 2 << 20} {
		resp := get(t, r.Client(), r, "every", d, "Range", closedRange(int(start), len(data)))
		got, err := io.ReadAll(resp.Body)
		wantEnd := (start/(1<<20) + 1) << 20
		if !isReset(err) || int64(len(got)) != wantEnd-start || !bytes.Equal(got, data[start:wantEnd]) {
			t.Errorf("from %d: read %d bytes (%v), want %d then a reset", start, len(got), err, wantEnd-start)
		}
	}
}

func TestUploadResetRequestDirection(t *testing.T) { eachImpl(t, testUploadResetRequestDirection) }

func testUploadResetRequestDirection(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(2<<20, 12)
	d := digest.FromBytes(data)
	c := r.Client()
	u := startUpload(t, r, "upreset")

	// The registry reads exactly 300000 bytes of the PATCH, keeps them, and
	// the client is reset afterwards.
	r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: ResetAfter(300000)})
	if _, err := patch(c, u, 0, data[:1<<20]); !isUploadReset(err) {
		t.Fatalf("PATCH: got %v, want a connection reset", err)
	}
	if ks := r.Stats().Kinds[UploadPatch]; ks.RequestBodyBytes != 300000 || ks.Statuses[0] != 1 || ks.Cuts != 1 {
		t.Errorf("UploadPatch stats %+v", ks)
	}
	u = holds(t, r, u, 300000)

	// ResetEvery on uploads counts from the PATCH's Content-Range start:
	// resuming at 300000 with a 512 KiB period is reset at 524288.
	f := r.Inject(Rule{Kind: UploadPatch, Action: ResetEvery(512 << 10)})
	if _, err := patch(c, u, 300000, data[300000:]); !isUploadReset(err) {
		t.Fatalf("PATCH from 300000: got %v, want a reset", err)
	}
	f.Remove()
	u = holds(t, r, u, 524288)

	resp, err := patch(c, u, 524288, data[524288:])
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH rest: %v %v", resp, err)
	}
	resp, err = send(c, http.MethodPut, withQuery(location(t, r, resp), "digest", d.String()), nil)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	if got, err := io.ReadAll(get(t, c, r, "upreset", d).Body); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after resumed upload: %d bytes, %v", len(got), err)
	}
}

func TestDropResponse(t *testing.T) { eachImpl(t, testDropResponse) }

func testDropResponse(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(1<<20, 13)
	u := startUpload(t, r, "drop")
	r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: DropResponse()})
	if _, err := patch(r.Client(), u, 0, data); err == nil {
		t.Fatal("PATCH succeeded, want the connection reset")
	}
	// The chunk was stored all the same.
	holds(t, r, u, int64(len(data)))
}

func TestRespond(t *testing.T) { eachImpl(t, testRespond) }

func testRespond(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(64<<10, 14)
	d := pushBlob(t, r, "status", data).Digest
	r.ResetStats()
	c := r.Client()

	date := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		action     Action
		status     int
		retryAfter string
		code       string
	}{
		{Respond(429).WithRetryAfter(1500 * time.Millisecond), 429, "2", "TOOMANYREQUESTS"},
		{Respond(503).WithRetryAfterDate(date), 503, "Wed, 02 Jan 2030 03:04:05 GMT", "UNAVAILABLE"},
		{Respond(403), 403, "", "DENIED"},
		{Respond(404), 404, "", "BLOB_UNKNOWN"},
		{Respond(500).WithError("QUOTA", "over quota"), 500, "", "QUOTA"},
	} {
		r.Inject(Rule{Kind: BlobGet, Times: 1, Action: tc.action})
		resp := get(t, c, r, "status", d)
		var body struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%v: body: %v", tc.action, err)
		}
		if resp.StatusCode != tc.status || resp.Header.Get("Retry-After") != tc.retryAfter ||
			len(body.Errors) != 1 || body.Errors[0].Code != tc.code {
			t.Errorf("%v: got %d Retry-After %q %+v", tc.action, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}

	// A 502 burst with a proxy's HTML page: three failures, then the blob.
	r.Inject(Rule{Kind: BlobGet, Times: 3, Action: Respond(502).WithBody("text/html", []byte("<html>Bad Gateway</html>"))})
	for i := range 3 {
		resp := get(t, c, r, "status", d)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "text/html" || string(b) != "<html>Bad Gateway</html>" {
			t.Fatalf("burst %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if resp := get(t, c, r, "status", d); resp.StatusCode != 200 {
		t.Fatalf("after the burst: %d", resp.StatusCode)
	}
	st := r.Stats().Kinds[BlobGet].Statuses
	if st[502] != 3 || st[429] != 1 || st[503] != 1 || st[200] != 1 {
		t.Errorf("statuses %v", st)
	}
}

func TestRuleMatching(t *testing.T) { eachImpl(t, testRuleMatching) }

func testRuleMatching(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	d1 := pushBlob(t, r, "a", []byte("one")).Digest
	d2 := pushBlob(t, r, "a", []byte("two")).Digest
	pushBlob(t, r, "b", []byte("two"))
	c := r.Client()
	f := r.Inject(Rule{Kind: BlobGet | BlobHead, Repo: "a", Digest: d2, Skip: 1, Times: 2, Action: Respond(500)})

	for i, tc := range []struct {
		repo string
		d    digest.Digest
		want int
	}{
		{"a", d1, 200}, // other digest
		{"b", d2, 200}, // other repo
		{"a", d2, 200}, // skipped
		{"a", d2, 500},
		{"a", d2, 500},
		{"a", d2, 200}, // spent
	} {
		if got := get(t, c, r, tc.repo, tc.d).StatusCode; got != tc.want {
			t.Errorf("request %d (%s %s): status %d, want %d", i, tc.repo, tc.d.Encoded()[:8], got, tc.want)
		}
	}
	if f.Applied() != 2 {
		t.Errorf("Applied = %d, want 2", f.Applied())
	}
}

func TestStall(t *testing.T) { eachImpl(t, testStall) }

func testStall(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(1<<20, 15)
	d := pushBlob(t, r, "stall", data).Digest

	t.Run("response", func(t *testing.T) {
		r.Inject(Rule{Kind: BlobGet, Times: 1, Action: Stall(1000)})
		c := r.Client()
		c.Timeout = 300 * time.Millisecond
		resp := get(t, c, r, "stall", d)
		got, err := io.ReadAll(resp.Body)
		if !isTimeout(err) || len(got) != 1000 {
			t.Fatalf("read %d bytes, %v; want 1000 then a timeout", len(got), err)
		}
	})

	t.Run("request", func(t *testing.T) {
		u := startUpload(t, r, "stall")
		r.Inject(Rule{Kind: UploadPatch, Times: 1, Action: Stall(200000)})
		c := r.Client()
		c.Timeout = 300 * time.Millisecond
		if _, err := patch(c, u, 0, data); !isTimeout(err) {
			t.Fatalf("PATCH: %v, want a timeout", err)
		}
		// The next request on the session (a status query, or ggcr's
		// empty PATCH) releases the stalled PATCH and sees its bytes.
		holds(t, r, u, 200000)
	})
}

func TestTrickleUpload(t *testing.T) { eachImpl(t, testTrickleUpload) }

func testTrickleUpload(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	const size, rate = 20000, 40000
	u := startUpload(t, r, "trickle")
	r.Inject(Rule{Kind: UploadPatch, Action: Trickle(0, rate)})
	start := time.Now()
	resp, err := patch(r.Client(), u, 0, randomBytes(size, 24))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %v %v", resp, err)
	}
	// The registry reads the body at the rate: about half a second.
	if e := time.Since(start); e < 300*time.Millisecond || e > 5*time.Second {
		t.Errorf("%d bytes trickled at %d B/s in %v", size, rate, e)
	}
}

func TestCorruptUpload(t *testing.T) { eachImpl(t, testCorruptUpload) }

func testCorruptUpload(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(100<<10, 25)
	u := startUpload(t, r, "corrupt")
	r.Inject(Rule{Kind: UploadPut, Action: Corrupt(1234)})
	resp, err := send(r.Client(), http.MethodPut, withQuery(u, "digest", digest.FromBytes(data).String()), data,
		"Content-Type", "application/octet-stream")
	// The registry hashes what it received and rejects it.
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("PUT of a corrupted body: %v %v, want 400 DIGEST_INVALID", resp, err)
	}
}

func TestTrickle(t *testing.T) { eachImpl(t, testTrickle) }

func testTrickle(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(1<<20, 16)
	d := pushBlob(t, r, "trickle", data).Digest
	const n, rate = 5000, 2000
	r.Inject(Rule{Kind: BlobGet, Action: Trickle(n, rate)})

	c := r.Client()
	c.Timeout = 600 * time.Millisecond
	start := time.Now()
	got, err := io.ReadAll(get(t, c, r, "trickle", d).Body)
	elapsed := time.Since(start).Seconds()
	if !isTimeout(err) || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("read %d bytes, %v; want a timeout", len(got), err)
	}
	// Loose bounds: more than the free bytes, less than twice the rate allows.
	if max := n + int(2*rate*elapsed) + rate/10; len(got) <= n || len(got) > max {
		t.Errorf("trickled %d bytes in %.2fs, want (%d, %d]", len(got), elapsed, n, max)
	}
}

func TestCorrupt(t *testing.T) { eachImpl(t, testCorrupt) }

func testCorrupt(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(256<<10, 17)
	d := pushBlob(t, r, "corrupt", data).Digest
	const off = 100000
	f := r.Inject(Rule{Kind: BlobGet, Action: Corrupt(off)})

	diff := func(got []byte, start int) []int {
		var at []int
		for i := range got {
			if got[i] != data[start+i] {
				at = append(at, start+i)
			}
		}
		return at
	}
	for _, start := range []int{0, 90000, 100001} {
		resp := get(t, r.Client(), r, "corrupt", d, "Range", closedRange(start, len(data)))
		got, err := io.ReadAll(resp.Body)
		if err != nil || len(got) != len(data)-start {
			t.Fatalf("from %d: %d bytes, %v", start, len(got), err)
		}
		at := diff(got, start)
		switch {
		case start > off && len(at) != 0:
			t.Errorf("from %d: bytes %v differ, want none", start, at)
		case start <= off && (len(at) != 1 || at[0] != off || got[off-start] != ^data[off]):
			t.Errorf("from %d: bytes %v differ, want exactly %d inverted", start, at, off)
		}
	}
	f.Remove()
}

func TestTruncate(t *testing.T) { eachImpl(t, testTruncate) }

func testTruncate(t *testing.T, impl Implementation) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"http", nil}, {"tls", []Option{WithTLS()}}} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(t, append(tc.opts, WithImplementation(impl))...)
			data := randomBytes(1<<20, 18)
			d := pushBlob(t, r, "trunc", data).Digest
			r.Inject(Rule{Kind: BlobGet, Times: 1, Action: Truncate(5000)})
			resp := get(t, r.Client(), r, "trunc", d)
			got, err := io.ReadAll(resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 5000 {
				t.Fatalf("read %d bytes, %v; want 5000 then io.ErrUnexpectedEOF", len(got), err)
			}
		})
	}
}

func TestIgnoreRange(t *testing.T) { eachImpl(t, testIgnoreRange) }

func testIgnoreRange(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(100<<10, 19)
	d := pushBlob(t, r, "norange", data).Digest

	resp := get(t, r.Client(), r, "norange", d, "Range", closedRange(1000, len(data)))
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("without the fault: %d, want 206", resp.StatusCode)
	}
	r.Inject(Rule{Kind: BlobGet, Action: IgnoreRange()})
	resp = get(t, r.Client(), r, "norange", d, "Range", closedRange(1000, len(data)))
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("with IgnoreRange: %d, %d bytes, %v; want 200 and the whole blob", resp.StatusCode, len(got), err)
	}
}

func TestBandwidth(t *testing.T) { eachImpl(t, testBandwidth) }

func testBandwidth(t *testing.T, impl Implementation) {
	t.Parallel() // it waits out the caps
	r := New(t, WithImplementation(impl))
	const size, rate = 512 << 10, 1 << 20
	data := randomBytes(size, 20)
	d := pushBlob(t, r, "slow", data).Digest
	r.SetBandwidth(rate, rate)

	// Loose bounds: the cap makes it take at least ~half a second; the upper
	// bound only catches a cap that is far too strict.
	check := func(what string, f func()) {
		start := time.Now()
		f()
		if e := time.Since(start); e < 400*time.Millisecond || e > 5*time.Second {
			t.Errorf("%s of %d bytes at %d B/s took %v", what, size, rate, e)
		}
	}
	check("download", func() {
		if got, err := io.ReadAll(get(t, r.Client(), r, "slow", d).Body); err != nil || len(got) != size {
			t.Fatalf("GET: %d bytes, %v", len(got), err)
		}
	})
	up := randomBytes(size, 21)
	u := startUpload(t, r, "slow")
	check("upload", func() {
		if resp, err := patch(r.Client(), u, 0, up); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH: %v %v", resp, err)
		}
	})
	r.SetBandwidth(0, 0)
	if s := r.Stats(); s.WireDown < size || s.WireUp < size {
		t.Errorf("wire counters %d down, %d up; want at least %d each", s.WireDown, s.WireUp, size)
	}
}

// A high cap is delivered, not just enforced: every sleep overshoots a
// little, and a pacer that forgot each overshoot held 64 MiB/s to ~28. On
// a simulated clock whose sleeps overshoot by 0.5 ms, 64 MiB at 64 MiB/s
// takes a second, and a pause still earns no burst afterwards.
func TestPacerKeepsUpDespiteOvershoot(t *testing.T) {
	var p pacer
	const rate = 64 << 20
	start := time.Unix(0, 0)
	now := start
	for sent := 0; sent < rate; sent += 64 << 10 {
		now = now.Add(max(p.delay(64<<10, rate, now), 0) + 500*time.Microsecond)
	}
	if e := now.Sub(start); e < 950*time.Millisecond || e > 1100*time.Millisecond {
		t.Fatalf("64 MiB at 64 MiB/s took %s of simulated time", e)
	}
	now = now.Add(10 * time.Second) // idle: no credit for it
	if d := p.delay(64<<10, rate, now); d < 900*time.Microsecond {
		t.Fatalf("after a pause the next piece is due in %s, want ~1ms", d)
	}
}

func TestCounters(t *testing.T) { eachImpl(t, testCounters) }

func testCounters(t *testing.T, impl Implementation) {
	r := New(t, WithImplementation(impl))
	data := randomBytes(300<<10, 22)
	d := pushBlob(t, r, "count", data).Digest
	s := r.Stats()
	if s.WireUp <= int64(len(data)) || s.Kinds[UploadPut].RequestBodyBytes != int64(len(data)) ||
		s.Kinds[UploadPost].Requests != 1 || s.Kinds[UploadPut].Statuses[201] != 1 {
		t.Errorf("after push: %+v", s)
	}

	r.ResetStats()
	if s := r.Stats(); s.WireUp != 0 || s.WireDown != 0 || len(s.Kinds) != 0 {
		t.Fatalf("after ResetStats: %+v", s)
	}
	for range 2 {
		io.Copy(io.Discard, get(t, r.Client(), r, "count", d).Body)
	}
	s = r.Stats()
	ks := s.Kinds[BlobGet]
	if ks.Requests != 2 || ks.ResponseBodyBytes != 2*int64(len(data)) || ks.Statuses[200] != 2 {
		t.Errorf("BlobGet %+v", ks)
	}
	// Wire bytes include the status lines and headers on top of the bodies.
	if s.WireDown <= ks.ResponseBodyBytes || s.WireUp == 0 {
		t.Errorf("wire %d down, %d up for %d body bytes", s.WireDown, s.WireUp, ks.ResponseBodyBytes)
	}
}

// TestCloseReleasesEverything closes a registry while connections are held
// by stalls in both directions and checks that no goroutine survives but
// those IgnoreLeaks names for the implementation.
func TestCloseReleasesEverything(t *testing.T) { eachImpl(t, testCloseReleasesEverything) }

func testCloseReleasesEverything(t *testing.T, impl Implementation) {
	defer goleak.VerifyNone(t, append(IgnoreLeaks(impl), goleak.IgnoreCurrent())...)

	r, err := Start(WithImplementation(impl))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(1<<20, 23)
	d := pushBlob(t, r, "held", data).Digest
	u := startUpload(t, r, "held")
	down := r.Inject(Rule{Kind: BlobGet, Action: Stall(100)})
	up := r.Inject(Rule{Kind: UploadPatch, Action: Stall(100)})
	trickle := r.Inject(Rule{Kind: BlobHead, Action: Delay(time.Hour)})

	errs := make(chan error, 3)
	c := r.Client()
	go func() {
		resp, err := c.Get(r.URL() + "/v2/held/blobs/" + d.String())
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		errs <- err
	}()
	go func() { _, err := patch(c, u, 0, data); errs <- err }()
	go func() { _, err := c.Head(r.URL() + "/v2/held/blobs/" + d.String()); errs <- err }()

	for deadline := time.Now().Add(5 * time.Second); down.Applied()+up.Applied()+trickle.Applied() < 3; {
		if time.Now().After(deadline) {
			t.Fatal("faults not applied")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the stalls be reached
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err == nil {
			t.Error("a held request succeeded")
		}
	}
	if e := time.Since(start); e > 2*time.Second {
		t.Errorf("Close and release took %v", e)
	}
}

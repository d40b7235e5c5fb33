package statedir

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

var dg = digest.FromString("sturdy")

func TestWriteReadMetaAtomicAndPrivate(t *testing.T) {
	d, err := Open(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Lock(dg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unlock()
	if _, err := b.ReadMeta(); !errors.Is(err, ErrNoState) {
		t.Fatalf("ReadMeta on nothing = %v, want ErrNoState", err)
	}
	want := Meta{Size: 10, Kind: KindPull, Kept: 4, Updated: time.Now().UTC().Truncate(time.Second)}
	if err := b.WriteMeta(want); err != nil {
		t.Fatal(err)
	}
	f, err := b.OpenData()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := b.ReadMeta()
	if err != nil || got.Kept != 4 || got.Digest != string(dg) || got.Version != Version {
		t.Fatalf("ReadMeta = %+v, %v", got, err)
	}
	for _, n := range []string{"meta.json", "data", "lock"} {
		info, err := os.Stat(filepath.Join(b.dir, n))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want 0600", n, info.Mode(), err)
		}
	}
	info, _ := os.Stat(b.dir)
	if info.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", info.Mode())
	}
	entries, _ := os.ReadDir(b.dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
	// An invalid meta is refused before it replaces a good one.
	if err := b.WriteMeta(Meta{Size: 10, Kind: KindPull, Kept: 11}); !errors.Is(err, ErrBadMeta) {
		t.Fatalf("WriteMeta(kept > size) = %v", err)
	}
	if got, err := b.ReadMeta(); err != nil || got.Kept != 4 {
		t.Fatalf("after a refused write: %+v, %v", got, err)
	}
}

func TestParseMetaRefuses(t *testing.T) {
	good := Meta{Version: Version, Digest: string(dg), Size: 10, Kind: KindPull, Kept: 3}
	push := Meta{Version: Version, Digest: string(dg), Size: 10, Kind: KindPush, Location: "https://r.example/v2/a/blobs/uploads/x", Repository: "r.example/a"}
	spans := good
	spans.Ranges = []Span{{4, 6}, {7, 8}, {9, 10}}
	for _, m := range []Meta{good, push, spans} {
		raw, _ := json.Marshal(m)
		got, err := ParseMeta(raw)
		if err != nil {
			t.Fatalf("ParseMeta(%s) = %v", raw, err)
		}
		if len(got.Ranges) != len(m.Ranges) || (len(m.Ranges) > 0 && got.Ranges[2] != m.Ranges[2]) {
			t.Fatalf("ParseMeta(%s) = %+v", raw, got)
		}
	}
	if raw, _ := json.Marshal(spans); !strings.Contains(string(raw), `"ranges":[[4,6],[7,8],[9,10]]`) {
		t.Fatalf("ranges written as %s", raw)
	}
	mut := func(f func(*Meta)) []byte {
		m := good
		f(&m)
		raw, _ := json.Marshal(m)
		return raw
	}
	cases := map[string][]byte{
		"empty":         nil,
		"garbage":       []byte("{\"version\":1,"),
		"other version": mut(func(m *Meta) { m.Version = 2 }),
		"bad digest":    mut(func(m *Meta) { m.Digest = "sha256:../../x" }),
		"sha999":        mut(func(m *Meta) { m.Digest = "sha999:abcd" }),
		"kept > size":   mut(func(m *Meta) { m.Kept = 11 }),
		"negative":      mut(func(m *Meta) { m.Size, m.Kept = -1, 0 }),
		"kind":          mut(func(m *Meta) { m.Kind = "other" }),
		"pull with url": mut(func(m *Meta) { m.Location = "https://r/x" }),
		"push no repo":  mut(func(m *Meta) { *m = push; m.Repository = "" }),
		"push file url": mut(func(m *Meta) { *m = push; m.Location = "file:///etc/passwd" }),
		"unknown field": []byte(`{"version":1,"digest":"` + string(dg) + `","size":1,"kind":"pull","x":1}`),
		"trailing":      append(mut(func(*Meta) {}), []byte("{}")...),
		"huge":          []byte(strings.Repeat(" ", maxMetaBytes+1)),
		// Ranges beyond the prefix: strictly checked, never repaired.
		"range at kept":      mut(func(m *Meta) { m.Ranges = []Span{{3, 5}} }),
		"range inside kept":  mut(func(m *Meta) { m.Ranges = []Span{{1, 5}} }),
		"range past size":    mut(func(m *Meta) { m.Ranges = []Span{{5, 11}} }),
		"empty range":        mut(func(m *Meta) { m.Ranges = []Span{{5, 5}} }),
		"reversed range":     mut(func(m *Meta) { m.Ranges = []Span{{6, 5}} }),
		"unsorted ranges":    mut(func(m *Meta) { m.Ranges = []Span{{7, 8}, {4, 5}} }),
		"overlapping ranges": mut(func(m *Meta) { m.Ranges = []Span{{4, 7}, {6, 8}} }),
		"touching ranges":    mut(func(m *Meta) { m.Ranges = []Span{{4, 6}, {6, 8}} }),
		"negative range":     mut(func(m *Meta) { m.Kept = 0; m.Ranges = []Span{{-2, 1}} }),
		"too many ranges": mut(func(m *Meta) {
			m.Size = 10 * MaxRanges
			for i := range MaxRanges + 1 {
				m.Ranges = append(m.Ranges, Span{int64(4 + 2*i), int64(5 + 2*i)})
			}
		}),
		"push with ranges": mut(func(m *Meta) { *m = push; m.Ranges = []Span{{4, 5}} }),
		"range of three":   []byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":1,"ranges":[[4,5,6]]}`),
		"range of one":     []byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":1,"ranges":[[4]]}`),
		"null range":       []byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":1,"ranges":[null]}`),
		"float range":      []byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":1,"ranges":[[4.5,6]]}`),
		"object range":     []byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":1,"ranges":[{"Start":4,"End":6}]}`),
	}
	for name, raw := range cases {
		if _, err := ParseMeta(raw); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: ParseMeta = %v, want ErrBadMeta", name, err)
		}
	}
}

func TestReadMetaOfAnotherDigest(t *testing.T) {
	d, _ := Open(t.TempDir(), time.Now())
	b, _ := d.Lock(dg)
	defer b.Unlock()
	other := Meta{Version: Version, Digest: string(digest.FromString("other")), Size: 1, Kind: KindPull}
	raw, _ := json.Marshal(other)
	os.WriteFile(filepath.Join(b.dir, "meta.json"), raw, 0o600)
	if _, err := b.ReadMeta(); !errors.Is(err, ErrBadMeta) {
		t.Fatalf("ReadMeta = %v, want ErrBadMeta", err)
	}
}

// flock locks belong to an open file description: two opens in one
// process exclude each other as two processes do.
func TestLockExcludesAndSurvivesRemoval(t *testing.T) {
	d, _ := Open(t.TempDir(), time.Now())
	a, err := d.Lock(dg)
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lock(dg); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	b, err := d.Lock(dg)
	if err != nil {
		t.Fatalf("Lock after Remove = %v", err)
	}
	b.Unlock()
	c, err := d.Lock(dg)
	if err != nil {
		t.Fatalf("Lock after Unlock = %v", err)
	}
	c.Unlock()
	if _, err := d.Lock("sha256:zz"); err == nil {
		t.Fatal("Lock of an invalid digest succeeded")
	}
}

func TestCleanRemovesStaleUnlocked(t *testing.T) {
	root := t.TempDir()
	d, _ := Open(root, time.Now())
	old, fresh, held := digest.FromString("old"), digest.FromString("fresh"), digest.FromString("held")
	for _, x := range []digest.Digest{old, fresh, held} {
		b, _ := d.Lock(x)
		updated := time.Now()
		if x != fresh {
			updated = updated.Add(-StaleAfter - time.Hour)
		}
		if err := b.WriteMeta(Meta{Size: 1, Kind: KindPull, Updated: updated}); err != nil {
			t.Fatal(err)
		}
		b.Unlock()
	}
	h, err := d.Lock(held)
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	defer h.Unlock()
	// A directory with garbage for a meta goes by its own time.
	junk := digest.FromString("junk")
	jd := d.blobDir(junk)
	os.MkdirAll(jd, 0o700)
	os.WriteFile(filepath.Join(jd, "meta.json"), []byte("{"), 0o600)
	past := time.Now().Add(-StaleAfter - time.Hour)
	os.Chtimes(jd, past, past)

	if _, err := Open(root, time.Now()); err != nil {
		t.Fatal(err)
	}
	exists := func(x digest.Digest) bool { _, err := os.Stat(d.blobDir(x)); return err == nil }
	if exists(old) || exists(junk) || !exists(fresh) || !exists(held) {
		t.Fatalf("after Clean: old %v junk %v fresh %v held %v", exists(old), exists(junk), exists(fresh), exists(held))
	}
}

func FuzzParseMeta(f *testing.F) {
	f.Add([]byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":3,"updated":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":3,"ranges":[[4,6],[8,10]],"updated":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"pull","kept":3,"ranges":[[4,6],[5,10]]}`))
	f.Add([]byte(`{"version":1,"digest":"` + string(dg) + `","size":10,"kind":"push","location":"https://r/v2/a/blobs/uploads/x?_state=s","repository":"r/a"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := ParseMeta(raw)
		if err != nil {
			return
		}
		if m.Kept < 0 || m.Kept > m.Size || m.Version != Version || len(m.Ranges) > MaxRanges {
			t.Fatalf("accepted %+v", m)
		}
		prev := m.Kept
		for _, s := range m.Ranges {
			if m.Kind != KindPull || s.Start <= prev || s.End <= s.Start || s.End > m.Size {
				t.Fatalf("accepted ranges %+v", m)
			}
			prev = s.End
		}
		if d := digest.Digest(m.Digest); d.Validate() != nil {
			t.Fatalf("accepted digest %q", m.Digest)
		}
		// What is accepted survives a round trip.
		again, _ := json.Marshal(m)
		if _, err := ParseMeta(again); err != nil {
			t.Fatalf("round trip of %s: %v", again, err)
		}
	})
}

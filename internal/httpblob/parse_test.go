package httpblob

import "testing"

func TestParseContentRange(t *testing.T) {
	cases := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-99/100", 0, 99, 100, true},
		{"bytes 100-199/200", 100, 199, 200, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{" bytes 1-1/2 ", 1, 1, 2, true},
		{"bytes 10-5/100", 0, 0, 0, false},
		{"bytes 0-99/99", 0, 0, 0, false},
		{"bytes 0-99", 0, 0, 0, false},
		{"0-99/100", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes a-b/c", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, c := range cases {
		s, e, tot, ok := parseContentRange(c.in)
		if ok != c.ok || (ok && (s != c.start || e != c.end || tot != c.total)) {
			t.Errorf("parseContentRange(%q) = %d %d %d %v", c.in, s, e, tot, ok)
		}
	}
}

func TestParseUploadRange(t *testing.T) {
	cases := []struct {
		in string
		n  int64
		ok bool
	}{
		{"0-0", 0, true}, // distribution: empty (or one byte; Patch's 416 settles it)
		{"0-99", 100, true},
		{"bytes=0-99", 100, true},
		{"0-", 0, false},
		{"5-10", 0, false},
		{"", 0, false},
		{"0--1", 0, false},
	}
	for _, c := range cases {
		n, ok := parseUploadRange(c.in)
		if n != c.n || ok != c.ok {
			t.Errorf("parseUploadRange(%q) = %d %v", c.in, n, ok)
		}
	}
}

func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-9/*", "0-0", "0-99", "bytes=0-1", "bytes 9223372036854775806-9223372036854775807/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if start, end, total, ok := parseContentRange(s); ok {
			if start < 0 || end < start || (total != -1 && total <= end) {
				t.Fatalf("parseContentRange(%q) accepted %d-%d/%d", s, start, end, total)
			}
		}
		if n, ok := parseUploadRange(s); ok && n < 0 {
			t.Fatalf("parseUploadRange(%q) = %d", s, n)
		}
	})
}

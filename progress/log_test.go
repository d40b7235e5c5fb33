package progress

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type logged struct {
	level slog.Level
	msg   string
	attrs map[string]any
	keys  []string
}

// capture is a slog.Handler that keeps records for inspection.
type capture struct {
	min     slog.Level
	mu      sync.Mutex
	records []logged
	handled int
}

func (c *capture) Enabled(_ context.Context, l slog.Level) bool { return l >= c.min }

func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handled++
	l := logged{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool {
		l.keys = append(l.keys, a.Key)
		l.attrs[a.Key] = a.Value.Any()
		return true
	})
	c.records = append(c.records, l)
	return nil
}

func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func TestLogLevelsAndAttrs(t *testing.T) {
	desc := ocispec.Descriptor{Digest: digest.FromString("blob"), Size: 1000}
	short := string(desc.Digest)[:len("sha256:")+12]
	errReset := errors.New("connection reset by peer")

	tests := []struct {
		e         Event
		level     slog.Level
		msg       string
		keys      []string
		attrs     map[string]any
		notLogged bool
	}{
		{
			e:     Event{Kind: Started, Desc: desc, Attempt: 1},
			level: slog.LevelDebug, msg: "blob started",
			keys: []string{"digest", "size", "attempt"},
		},
		{
			e:         Event{Kind: Progressed, Desc: desc, Attempt: 1, Offset: 10},
			notLogged: true,
		},
		{
			e:     Event{Kind: Retrying, Desc: desc, Attempt: 2, Offset: 300, Wire: 400, Reason: "connection reset", Backoff: 5 * time.Second, Err: errReset},
			level: slog.LevelWarn, msg: "blob retrying",
			keys:  []string{"digest", "size", "attempt", "reason", "backoff", "offset", "wire", "err"},
			attrs: map[string]any{"digest": short, "size": int64(1000), "attempt": int64(2), "reason": "connection reset", "backoff": 5 * time.Second, "offset": int64(300), "wire": int64(400), "err": errReset},
		},
		{
			e:     Event{Kind: Resumed, Desc: desc, Attempt: 3, Offset: 300},
			level: slog.LevelInfo, msg: "blob resumed",
			keys:  []string{"digest", "size", "attempt", "offset"},
			attrs: map[string]any{"offset": int64(300)},
		},
		{
			e:     Event{Kind: Skipped, Desc: desc, Reason: "exists"},
			level: slog.LevelDebug, msg: "blob skipped",
			keys: []string{"digest", "size", "reason"},
		},
		{
			e:     Event{Kind: Mounted, Desc: desc, Reason: "from repo a/b"},
			level: slog.LevelInfo, msg: "blob mounted",
			keys:  []string{"digest", "size", "reason"},
			attrs: map[string]any{"reason": "from repo a/b"},
		},
		{
			e:     Event{Kind: Completed, Desc: desc, Attempt: 3, Offset: 1000},
			level: slog.LevelDebug, msg: "blob completed",
			keys: []string{"digest", "size", "attempt"},
		},
		{
			e:     Event{Kind: Failed, Desc: desc, Attempt: 6, Offset: 300, Reason: "HTTP 403", Err: errReset},
			level: slog.LevelError, msg: "blob failed",
			keys:  []string{"digest", "size", "attempt", "reason", "offset", "err"},
			attrs: map[string]any{"reason": "HTTP 403", "err": errReset},
		},
		{
			e:     Event{Kind: Note, Reason: "registry refused chunked upload; falling back to monolithic"},
			level: slog.LevelInfo, msg: "note",
			keys: []string{"reason"},
		},
		{
			e:     Event{Kind: Note, Desc: desc, Attempt: 1, Reason: "fallback"},
			level: slog.LevelInfo, msg: "note",
			keys: []string{"digest", "size", "attempt", "reason"},
		},
		{
			e:         Event{Kind: 0, Desc: desc},
			notLogged: true,
		},
		{
			e:         Event{Kind: Note + 1, Desc: desc},
			notLogged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.e.Kind.String(), func(t *testing.T) {
			h := &capture{min: slog.LevelDebug}
			Log(slog.New(h)).OnEvent(tt.e)
			if tt.notLogged {
				if len(h.records) != 0 {
					t.Fatalf("logged %+v, want nothing", h.records)
				}
				return
			}
			if len(h.records) != 1 {
				t.Fatalf("got %d records, want 1", len(h.records))
			}
			r := h.records[0]
			if r.level != tt.level || r.msg != tt.msg {
				t.Errorf("got level %v msg %q, want %v %q", r.level, r.msg, tt.level, tt.msg)
			}
			if !reflect.DeepEqual(r.keys, tt.keys) {
				t.Errorf("keys %v, want %v", r.keys, tt.keys)
			}
			for k, v := range tt.attrs {
				if got := r.attrs[k]; !reflect.DeepEqual(got, v) {
					t.Errorf("%s = %#v, want %#v", k, got, v)
				}
			}
		})
	}
}

func TestLogSkipsDisabledLevels(t *testing.T) {
	h := &capture{min: slog.LevelWarn}
	obs := Log(slog.New(h))
	desc := ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1}
	for _, k := range []Kind{Started, Progressed, Resumed, Skipped, Mounted, Completed, Note, Retrying, Failed} {
		obs.OnEvent(Event{Kind: k, Desc: desc})
	}
	if h.handled != 2 {
		t.Errorf("handled %d records, want 2 (retrying, failed)", h.handled)
	}
}

func TestLogNilLoggerUsesDefault(t *testing.T) {
	h := &capture{min: slog.LevelDebug}
	old := slog.Default()
	obs := Log(nil) // built before SetDefault: the default is looked up per event
	slog.SetDefault(slog.New(h))
	t.Cleanup(func() { slog.SetDefault(old) })

	obs.OnEvent(Event{Kind: Failed, Desc: ocispec.Descriptor{Digest: digest.FromString("x")}, Reason: "HTTP 401"})
	if len(h.records) != 1 || h.records[0].msg != "blob failed" {
		t.Fatalf("records %+v, want one \"blob failed\"", h.records)
	}
}

func TestShortDigest(t *testing.T) {
	for in, want := range map[digest.Digest]string{
		"sha256:0123456789abcdef0123": "sha256:0123456789ab",
		"sha512:0123456789ab":         "sha512:0123456789ab",
		"sha256:abc":                  "sha256:abc",
		"nocolon0123456789":           "nocolon01234",
		"short":                       "short",
		"":                            "",
	} {
		if got := shortDigest(in); got != want {
			t.Errorf("shortDigest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLogSourceAndRange(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	d := ocispec.Descriptor{Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), Size: 10 << 20}
	Log(logger).OnEvent(Event{Kind: Retrying, Desc: d, Attempt: 1, Op: "fetch", Reason: "connection reset",
		Range: Range{Start: 8 << 20, End: 10 << 20}, Source: "cache"})
	out := buf.String()
	for _, want := range []string{"source=cache", `range="bytes 8388608-10485759"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("log line %q lacks %s", out, want)
		}
	}
}

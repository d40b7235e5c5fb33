// Package statedir keeps what a transfer needs to continue in a later
// process: per blob, a small meta.json and, for a pull, the bytes received
// so far. Everything here is a hint. A reader checks the structure (it
// parses, its version, digest and size match, the kept bytes are there),
// and the caller still verifies the blob's digest over the whole stream:
// a kept byte that flipped on disk costs a restart, never a wrong blob.
//
// Layout: <root>/blobs/<algorithm>/<hex>/ holds meta.json, data (a pull's
// kept bytes) and lock. Directories are 0700 and files 0600: an upload
// Location carries a session token.
package statedir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

const (
	// Version is the meta.json format. A file of another version is
	// discarded, not migrated: it only saves bytes.
	Version = 1
	// StaleAfter: a blob whose state was not updated for this long is
	// removed when a copy opens the directory. Registries purge upload
	// sessions after a week at most (distribution's default is 7 days),
	// and kept pull bytes of a copy nobody reran are only disk use.
	StaleAfter = 7 * 24 * time.Hour
	// maxMetaBytes bounds what is read of a meta.json.
	maxMetaBytes = 64 << 10
	// MaxRanges bounds Meta.Ranges.
	MaxRanges = 64
)

// Kinds of state.
const (
	KindPull = "pull"
	KindPush = "push"
)

var (
	// ErrLocked: another process (or another open in this one) holds the
	// blob's lock.
	ErrLocked = errors.New("state of this blob is in use by another copy")
	// ErrUnsupported: this platform has no lock sturdy trusts.
	ErrUnsupported = errors.New("state directory locking is not supported on this platform")
	// ErrNoState: nothing is kept for the blob.
	ErrNoState = errors.New("no state kept")
	// ErrBadMeta wraps every reason a meta.json is not used.
	ErrBadMeta = errors.New("unusable state file")
)

// Meta describes one blob's kept state.
type Meta struct {
	Version int    `json:"version"`
	Digest  string `json:"digest"`
	Size    int64  `json:"size"`
	Kind    string `json:"kind"`
	// Kept is, for a pull, how many leading bytes of data were written
	// when the meta was last checkpointed.
	Kept int64 `json:"kept,omitempty"`
	// Ranges are, for a pull, spans of data beyond Kept that were received
	// whole and written at their offset (ranges a parallel read fetched
	// ahead of the prefix): sorted, apart (a span never touches the next
	// or the prefix: the writer merges them), inside the blob, at most
	// MaxRanges. Optional: a meta without it keeps the prefix only.
	Ranges []Span `json:"ranges,omitempty"`
	// Location is, for a push, the upload session's first Location, and
	// Repository the destination ("host/name") it belongs to.
	Location   string    `json:"location,omitempty"`
	Repository string    `json:"repository,omitempty"`
	Updated    time.Time `json:"updated"`
}

// ParseMeta reads and checks a meta.json. It never trusts what it reads:
// every field is checked against what a writer of this version writes.
func ParseMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) > maxMetaBytes {
		return m, fmt.Errorf("%w: %d bytes", ErrBadMeta, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	if dec.More() {
		return Meta{}, fmt.Errorf("%w: trailing data", ErrBadMeta)
	}
	if err := m.check(); err != nil {
		return Meta{}, err
	}
	return m, nil
}

// Span is the byte range [Start, End), written in meta.json as [start,end].
type Span struct{ Start, End int64 }

func (s Span) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]int64{s.Start, s.End})
}

// UnmarshalJSON takes exactly two integers: encoding/json would drop the
// extra elements of a longer array into [2]int64.
func (s *Span) UnmarshalJSON(b []byte) error {
	var v []int64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if len(v) != 2 {
		return fmt.Errorf("a span has %d numbers, want 2", len(v))
	}
	s.Start, s.End = v[0], v[1]
	return nil
}

// Len is how many bytes s holds.
func (s Span) Len() int64 { return s.End - s.Start }

// CheckRanges reports whether spans are sorted, apart, beyond kept and
// inside size, at most MaxRanges of them.
func CheckRanges(spans []Span, kept, size int64) error {
	if len(spans) > MaxRanges {
		return fmt.Errorf("%w: %d ranges, at most %d", ErrBadMeta, len(spans), MaxRanges)
	}
	prev := kept
	for _, s := range spans {
		if s.Start <= prev || s.End <= s.Start || s.End > size {
			return fmt.Errorf("%w: range [%d,%d) after %d in a blob of %d", ErrBadMeta, s.Start, s.End, prev, size)
		}
		prev = s.End
	}
	return nil
}

func (m Meta) check() error {
	if m.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrBadMeta, m.Version, Version)
	}
	d, err := digest.Parse(m.Digest)
	if err != nil || !supported(d) {
		return fmt.Errorf("%w: digest %q", ErrBadMeta, m.Digest)
	}
	if m.Size < 0 || m.Kept < 0 || m.Kept > m.Size {
		return fmt.Errorf("%w: kept %d of size %d", ErrBadMeta, m.Kept, m.Size)
	}
	switch m.Kind {
	case KindPull:
		if m.Location != "" || m.Repository != "" {
			return fmt.Errorf("%w: a pull with an upload session", ErrBadMeta)
		}
		if err := CheckRanges(m.Ranges, m.Kept, m.Size); err != nil {
			return err
		}
	case KindPush:
		if m.Kept != 0 || m.Ranges != nil {
			return fmt.Errorf("%w: a push with kept bytes", ErrBadMeta)
		}
		u, err := url.Parse(m.Location)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || m.Repository == "" {
			return fmt.Errorf("%w: upload location or repository", ErrBadMeta)
		}
	default:
		return fmt.Errorf("%w: kind %q", ErrBadMeta, m.Kind)
	}
	return nil
}

func supported(d digest.Digest) bool {
	return d.Validate() == nil && (d.Algorithm() == digest.SHA256 || d.Algorithm() == digest.SHA512)
}

// Dir is an open state directory.
type Dir struct{ root string }

// Open creates root if needed (0700) and removes state older than
// StaleAfter (as of now) that no other copy holds.
func Open(root string, now time.Time) (*Dir, error) {
	if root == "" {
		return nil, errors.New("statedir: empty path")
	}
	if err := os.MkdirAll(filepath.Join(root, "blobs"), 0o700); err != nil {
		return nil, fmt.Errorf("statedir: %w", err)
	}
	d := &Dir{root: root}
	d.Clean(now)
	return d, nil
}

// Clean removes every blob's state that was last updated before
// now - StaleAfter (by its meta, or by the directory's time when the meta
// is unusable) and is not locked. It returns how many it removed.
func (d *Dir) Clean(now time.Time) int {
	removed := 0
	algos, _ := os.ReadDir(filepath.Join(d.root, "blobs"))
	for _, a := range algos {
		if !a.IsDir() {
			continue
		}
		hexes, _ := os.ReadDir(filepath.Join(d.root, "blobs", a.Name()))
		for _, h := range hexes {
			dg := digest.NewDigestFromEncoded(digest.Algorithm(a.Name()), h.Name())
			if !h.IsDir() || !supported(dg) {
				continue
			}
			dir := filepath.Join(d.root, "blobs", a.Name(), h.Name())
			updated := time.Time{}
			if b, err := os.ReadFile(filepath.Join(dir, "meta.json")); err == nil {
				if m, err := ParseMeta(b); err == nil {
					updated = m.Updated
				}
			}
			if updated.IsZero() {
				if info, err := h.Info(); err == nil {
					updated = info.ModTime()
				}
			}
			if now.Sub(updated) < StaleAfter {
				continue
			}
			b, err := d.Lock(dg)
			if err != nil {
				continue
			}
			if b.Remove() == nil {
				removed++
			}
		}
	}
	return removed
}

// Blob is the locked state of one blob. Its methods are for one goroutine
// at a time.
type Blob struct {
	Digest digest.Digest
	dir    string
	lock   *os.File
}

func (d *Dir) blobDir(dg digest.Digest) string {
	return filepath.Join(d.root, "blobs", string(dg.Algorithm()), dg.Encoded())
}

// Lock takes the blob's lock without waiting: ErrLocked if another copy
// holds it. Two opens in one process conflict too (flock locks belong to
// an open file description).
func (d *Dir) Lock(dg digest.Digest) (*Blob, error) {
	if !supported(dg) {
		return nil, fmt.Errorf("statedir: unsupported digest %q", dg)
	}
	dir := d.blobDir(dg)
	// A holder that completes removes the directory and its lock file: a
	// lock taken on the removed file is no lock, so look again.
	for range 3 {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("statedir: %w", err)
		}
		path := filepath.Join(dir, "lock")
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("statedir: %w", err)
		}
		if err := lockFile(f); err != nil {
			f.Close()
			return nil, err
		}
		if sameFile(f, path) {
			return &Blob{Digest: dg, dir: dir, lock: f}, nil
		}
		f.Close()
	}
	return nil, ErrLocked
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// ReadMeta reads and checks the blob's meta.json: ErrNoState when there is
// none, an error wrapping ErrBadMeta when it is unusable, or one for
// another digest.
func (b *Blob) ReadMeta() (Meta, error) {
	f, err := os.Open(filepath.Join(b.dir, "meta.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, ErrNoState
	}
	if err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	defer f.Close()
	buf := make([]byte, maxMetaBytes+1)
	n, _ := readFull(f, buf)
	m, err := ParseMeta(buf[:n])
	if err != nil {
		return Meta{}, err
	}
	if m.Digest != string(b.Digest) {
		return Meta{}, fmt.Errorf("%w: digest %s in the state of %s", ErrBadMeta, m.Digest, b.Digest)
	}
	return m, nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := f.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// WriteMeta replaces meta.json atomically (a temporary file renamed over
// it): a process killed mid-write leaves the old one or the new one.
func (b *Blob) WriteMeta(m Meta) error {
	m.Version, m.Digest = Version, string(b.Digest)
	if err := m.check(); err != nil {
		return err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(b.dir, ".meta-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after a rename; a leftover otherwise
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(b.dir, "meta.json"))
}

// OpenData opens (creating, 0600) the file that holds a pull's kept bytes.
func (b *Blob) OpenData() (*os.File, error) {
	return os.OpenFile(filepath.Join(b.dir, "data"), os.O_RDWR|os.O_CREATE, 0o600)
}

// Clear removes what is kept (meta and data) and keeps the lock.
func (b *Blob) Clear() error {
	var errs []error
	for _, n := range []string{"meta.json", "data"} {
		if err := os.Remove(filepath.Join(b.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove deletes the blob's directory and releases the lock.
func (b *Blob) Remove() error {
	err := b.Clear()
	entries, _ := os.ReadDir(b.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".meta-") || e.Name() == "lock" {
			os.Remove(filepath.Join(b.dir, e.Name()))
		}
	}
	if rerr := os.Remove(b.dir); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	b.Unlock()
	return err
}

// Unlock releases the lock and keeps the state.
func (b *Blob) Unlock() {
	if b.lock != nil {
		b.lock.Close() // closing the descriptor releases the flock
		b.lock = nil
	}
}

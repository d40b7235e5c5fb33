// Package ui shows a sturdy transfer to a person: progress bars on a
// terminal (vbauerster/mpb), one plain line per event of interest
// otherwise, so that `make demo > log` reads well. The demo and the copy
// example share it.
//
// Both displays are progress.Observers. The transfer calls OnEvent from
// its own goroutines while the display renders from another, so every
// piece of state a renderer reads is guarded by a mutex (a lesson from
// modctl, whose bar message was a plain string written by transfer
// goroutines while mpb's render goroutine read it).
package ui

import (
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sturdyoci/sturdy/progress"
)

// Display is an Observer that draws a transfer. Close it when the transfer
// has returned, before printing anything else to the same writer.
type Display interface {
	progress.Observer
	Close()
}

// New returns bars when w is a terminal, lines otherwise. phase names the
// transfer on every line ("push", "pull", "copy").
func New(w io.Writer, phase string) Display {
	if IsTerminal(w) {
		return NewBars(w, phase)
	}
	return NewLines(w, phase)
}

// IsTerminal reports whether w is a character device, such as a terminal.
// A file or a pipe is not.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Label names a blob for a person: the file name an artifact gave it
// (org.opencontainers.image.title), else its role and a short digest.
func Label(d ocispec.Descriptor) string {
	if t := d.Annotations[ocispec.AnnotationTitle]; t != "" {
		return t
	}
	role := "blob"
	switch mt := d.MediaType; {
	case mt == ocispec.MediaTypeImageIndex || strings.Contains(mt, "manifest.list"):
		role = "index"
	case mt == ocispec.MediaTypeImageManifest || strings.Contains(mt, "manifest"):
		role = "manifest"
	case strings.Contains(mt, "config") || mt == ocispec.MediaTypeEmptyJSON:
		role = "config"
	}
	return role + " " + ShortDigest(string(d.Digest))
}

// ShortDigest keeps 12 hex digits, without the algorithm.
func ShortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok {
		d = hex
	}
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// Bytes, Rate and Duration format as the progress package's summaries do.
var (
	Bytes    = progress.FormatBytes
	Rate     = progress.FormatRate
	Duration = progress.FormatDuration
)

// ParseSize reads a byte count: a plain integer, or a number with a unit,
// binary (KiB, MiB, GiB, TiB; K, M, G, T and k, m, g, t mean the same) or
// decimal (KB, MB, GB, TB). "1.5GiB" and "256 MiB" are accepted.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, &sizeError{s, "unknown unit " + strconv.Quote(unit)}
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 || (n > 0 && mult > math.MaxInt64/n) {
			return 0, &sizeError{s, "out of range"}
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*float64(mult) >= math.MaxInt64 {
		return 0, &sizeError{s, "not a size"}
	}
	return int64(f * float64(mult)), nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

type sizeError struct{ in, why string }

func (e *sizeError) Error() string { return "size " + strconv.Quote(e.in) + ": " + e.why }

// plural is "1 retry", "2 retries".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

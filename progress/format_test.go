package progress

import (
	"math"
	"testing"
	"time"
)

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:              "0 B",
		1023:           "1023 B",
		1024:           "1.0 KiB",
		1536:           "1.5 KiB",
		412 << 20:      "412 MiB",
		3 << 29:        "1.5 GiB",
		99<<30 + 1<<29: "99.5 GiB",
		1 << 40:        "1.0 TiB",
		math.MaxInt64:  "8.0 EiB",
		-2048:          "-2.0 KiB",
		math.MinInt64:  "-8.0 EiB",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for r, want := range map[float64]string{
		0:            "0 B/s",
		-5:           "0 B/s",
		math.NaN():   "0 B/s",
		math.Inf(1):  "0 B/s",
		412 << 20:    "412 MiB/s",
		12.25 * 1024: "12.2 KiB/s",
	} {
		if got := FormatRate(r); got != want {
			t.Errorf("FormatRate(%v) = %q, want %q", r, got, want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "0s",
		-time.Second:             "0s",
		1500 * time.Microsecond:  "2ms",
		12345 * time.Millisecond: "12.3s",
		62500 * time.Millisecond: "1m3s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

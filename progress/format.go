package progress

import (
	"math"
	"strconv"
	"time"
)

// FormatBytes renders n with binary units: "512 B", "1.5 GiB", "412 MiB".
// Below 100 of a unit it keeps one decimal, which is as much precision as a
// person reading a progress bar or a summary uses.
func FormatBytes(n int64) string {
	if n < 0 {
		return "-" + FormatBytes(-max(n, -math.MaxInt64))
	}
	return formatFloatBytes(float64(n))
}

// FormatRate renders bytes per second: "412 MiB/s".
func FormatRate(bytesPerSecond float64) string {
	if bytesPerSecond <= 0 || math.IsNaN(bytesPerSecond) || math.IsInf(bytesPerSecond, 0) {
		return "0 B/s"
	}
	return formatFloatBytes(bytesPerSecond) + "/s"
}

func formatFloatBytes(v float64) string {
	const units = "KMGTPE"
	if v < 1024 {
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64) + " B"
	}
	unit := -1
	for v >= 1024 && unit < len(units)-1 {
		v /= 1024
		unit++
	}
	prec := 0
	if v < 100 {
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + " " + units[unit:unit+1] + "iB"
}

// FormatDuration rounds d to what a person cares about at that scale:
// milliseconds under a second, tenths under a minute, whole seconds above.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

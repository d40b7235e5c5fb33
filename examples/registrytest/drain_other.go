//go:build !linux

package registrytest

import (
	"net"
	"time"
)

// unsentBytes cannot ask the kernel outside Linux: it grants the send queue
// a short grace period and then reports it empty.
func unsentBytes(*net.TCPConn) (int, bool) {
	time.Sleep(20 * time.Millisecond)
	return 0, true
}

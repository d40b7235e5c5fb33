package registrytest

import (
	"net"

	"golang.org/x/sys/unix"
)

// unsentBytes reports how many bytes the kernel still holds in the socket's
// send queue, unsent or unacknowledged (SIOCOUTQ).
func unsentBytes(c *net.TCPConn) (int, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) { n, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ioctlErr != nil {
		return 0, false
	}
	return n, true
}

//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package statedir

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive flock without waiting. The kernel drops it
// when the process dies, however it dies: a SIGKILLed copy leaves no lock
// behind.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return ErrLocked
		}
		return fmt.Errorf("statedir: lock: %w", err)
	}
}

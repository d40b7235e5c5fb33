//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package statedir

import "os"

// lockFile: without flock, a lock file a killed process left behind
// would hold its blob until StaleAfter, and one that does not exclude
// would let two copies write one spool. Copies go without state instead.
func lockFile(*os.File) error { return ErrUnsupported }

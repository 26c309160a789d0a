package supervisor

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// watchExit returns a channel that is closed when process pid ends, and a
// release that ends the watch. It waits on a pidfd in Go's poller, so an idle
// supervisor is not woken to ask whether its plugins still run (asking each
// of four every 50ms cost it 80 wake-ups a second); the process stays
// go-plugin's to reap. Without pidfds (Linux before 5.3) it returns an error
// and the caller polls.
func watchExit(pid int) (exited <-chan struct{}, release func(), err error) {
	if pid <= 0 {
		return nil, nil, fmt.Errorf("watch exit of pid %d: no such process", pid)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, nil, fmt.Errorf("watch exit of pid %d: pidfd_open: %w", pid, err)
	}
	// Non-blocking, so os registers it with the poller.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("watch exit of pid %d: %w", pid, err)
	}
	done := make(chan struct{})
	go func() {
		// A pidfd is readable once its process has ended; Read parks
		// in the poller while the function says it is not yet, and
		// returns an error when release closes the file.
		err := rc.Read(func(fd uintptr) bool {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			if errors.Is(err, unix.EINTR) {
				return false
			}
			return err != nil || n > 0
		})
		if err == nil {
			close(done)
		}
	}()
	return done, func() { f.Close() }, nil
}

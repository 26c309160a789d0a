package announcer

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// netnsRef is the network namespace the announcer was first configured in.
// Sockets it opens later (a reopened ARP or NDP socket, a netlink
// subscription after an error) may be opened from any goroutine, so on any
// OS thread; do opens them in this namespace all the same.
//
// In the plugin the whole process lives in one namespace and do never
// switches; tests run several announcers in namespaces of their own.
type netnsRef struct {
	h netns.NsHandle
}

// currentNetns is the namespace of the calling thread; the caller must be
// locked to it (or, as in the plugin, every thread is in it).
func currentNetns() (*netnsRef, error) {
	h, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	return &netnsRef{h: h}, nil
}

// do runs fn on a thread inside the namespace and waits for it. The thread
// is a fresh goroutine's, locked for the call: when it had to switch and
// cannot switch back, it is never unlocked, so the runtime ends the thread
// instead of handing it, still in the wrong namespace, to other goroutines.
// Switching needs CAP_SYS_ADMIN; when the thread is already in the
// namespace, nothing is switched.
func (r *netnsRef) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace: %w", err)
			return
		}
		defer cur.Close()
		if cur.Equal(r.h) {
			err := fn()
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		if err := netns.Set(r.h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = fn()
		if netns.Set(cur) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func (r *netnsRef) close() {
	if r.h.IsOpen() {
		_ = r.h.Close() // also marks it closed
	}
}

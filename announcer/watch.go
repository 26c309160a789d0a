package announcer

import (
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
)

// Bounds of the watcher's retries when a netlink subscription cannot be
// opened or breaks.
const (
	resubscribeFirst = 100 * time.Millisecond
	resubscribeMax   = 5 * time.Second
)

// linkEvents is what a linkWatcher reports to. Each call is made on the
// watcher's goroutine, one at a time.
type linkEvents interface {
	// linkChanged: a link update named the interface, or its index.
	linkChanged(w *linkWatcher, name string, index int)
	// addrGone: a host address was deleted from some interface.
	addrGone(w *linkWatcher, u netlink.AddrUpdate)
	// resync: read everything afresh; events may have been missed.
	resync(w *linkWatcher)
}

// linkWatcher follows the interface through two netlink subscriptions, to
// link updates and to address updates, opened in the announcer's network
// namespace, and reports them on its own goroutine.
//
// Events alone are not trusted: a subscription whose socket buffer
// overflows under a flood of changes breaks and is opened again, and what
// happened meanwhile is lost. So the watcher asks for a resync after every
// (re)subscription and every interval.
type linkWatcher struct {
	ns    *netnsRef
	log   zerolog.Logger
	to    linkEvents
	every time.Duration
	// failed counts a subscription error.
	failed func()

	stop chan struct{}
	done chan struct{}
}

func startLinkWatcher(ns *netnsRef, log zerolog.Logger, to linkEvents, every time.Duration, failed func()) *linkWatcher {
	w := &linkWatcher{
		ns: ns, log: log, to: to, every: every, failed: failed,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go w.run()
	return w
}

// signal asks the watcher to stop and returns at once: it may be waiting
// for the lock of the one who asks.
func (w *linkWatcher) signal() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
}

// wait waits until the watcher has stopped and closed its sockets.
func (w *linkWatcher) wait() { <-w.done }

func (w *linkWatcher) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *linkWatcher) run() {
	defer close(w.done)
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	backoff := resubscribeFirst
	for !w.stopped() {
		links, addrs, cancel, err := w.subscribe()
		if err != nil {
			w.failed()
			w.log.Error().Err(err).Dur("retry_in", backoff).Msg("watch interface: subscribe")
			select {
			case <-w.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, resubscribeMax)
			continue
		}
		backoff = resubscribeFirst
		w.to.resync(w) // what happened before or between subscriptions
		broke := w.follow(links, addrs, tick.C)
		cancel()
		if broke {
			w.failed()
			w.log.Warn().Msg("watch interface: netlink subscription ended; subscribing again")
		}
	}
}

// follow reports updates until the watcher is stopped (false) or a
// subscription ends (true).
func (w *linkWatcher) follow(links <-chan netlink.LinkUpdate, addrs <-chan netlink.AddrUpdate, tick <-chan time.Time) bool {
	for {
		select {
		case <-w.stop:
			return false
		case u, ok := <-links:
			if !ok {
				return true
			}
			if at := u.Attrs(); at != nil {
				w.to.linkChanged(w, at.Name, at.Index)
			}
		case u, ok := <-addrs:
			if !ok {
				return true
			}
			if !u.NewAddr {
				w.to.addrGone(w, u)
			}
		case <-tick:
			w.to.resync(w)
		}
	}
}

// subscribe opens both subscriptions in the announcer's namespace. cancel
// closes them and waits until netlink's readers have given up their
// channels.
func (w *linkWatcher) subscribe() (<-chan netlink.LinkUpdate, <-chan netlink.AddrUpdate, func(), error) {
	links := make(chan netlink.LinkUpdate, 16)
	addrs := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	onErr := func(err error) {
		select {
		case <-done:
			return // closing the socket fails the read in progress
		default:
		}
		w.log.Warn().Err(err).Msg("watch interface: netlink")
	}
	var linkOK bool
	err := w.ns.do(func() error {
		if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
			return err
		}
		linkOK = true
		return netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
	})
	cancel := func() {
		close(done)
		// Closing done closes the sockets, which ends netlink's readers;
		// until then they may be blocked handing over an update.
		drain(links, linkOK)
		drain(addrs, linkOK && err == nil)
	}
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return links, addrs, cancel, nil
}

// drain empties ch until its writer closes it; a channel no reader was
// started for is left alone.
func drain[T any](ch chan T, started bool) {
	if !started {
		return
	}
	for range ch {
	}
}

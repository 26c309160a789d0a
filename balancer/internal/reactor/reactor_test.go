package reactor

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type nopHandler struct{}

func (nopHandler) Event(int, uint32) {}

// TestTickersOnlyWithSockets: a loop with nothing to time out (no socket,
// or only a listening one) does not tick, so an idle balancer is not woken
// for nothing; a registered connection starts the tickers again and its
// removal stops them.
func TestTickersOnlyWithSockets(t *testing.T) {
	r, err := newReactor()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	var ticks atomic.Int64
	stop := r.Every(Tick, func(time.Time) { ticks.Add(1) })
	t.Cleanup(stop)

	// Ten ticks' worth of time each: a ticking loop would count ~10.
	idleWindow := 10 * Tick
	idleTicks := func(what string) {
		t.Helper()
		time.Sleep(2 * Tick) // the one tick an idle loop may still run
		before := ticks.Load()
		time.Sleep(idleWindow)
		if n := ticks.Load() - before; n > 0 {
			t.Errorf("%s: %d ticks in %s, want none", what, n, idleWindow)
		}
	}
	idleTicks("no socket")

	listenFd, connFd := socketPair(t)
	r.Do(func() {
		if err := r.Add(listenFd, &Listener{r: r, fd: listenFd}, unix.EPOLLIN); err != nil {
			t.Errorf("add listener: %v", err)
		}
	})
	idleTicks("a listening socket only")

	r.Do(func() {
		if err := r.Add(connFd, nopHandler{}, EvConn); err != nil {
			t.Errorf("add connection: %v", err)
		}
	})
	before := ticks.Load()
	deadline := time.Now().Add(5 * time.Second)
	for ticks.Load()-before < 3 && time.Now().Before(deadline) {
		time.Sleep(Tick)
	}
	if n := ticks.Load() - before; n < 3 {
		t.Fatalf("with a connection: %d ticks in 5s, want them running", n)
	}

	r.Do(func() { r.remove(connFd) })
	idleTicks("the connection removed")
	r.Do(func() { r.remove(listenFd) })
}

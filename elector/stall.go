package elector

import (
	"sync"
	"time"
)

// stallWatch measures, while this member leads, how long the elector went
// without being scheduled: a ticker's lateness. A leader that the host did
// not run for about a lease steps down by its own lease check although its
// followers still follow it (timing.go, "A leader that is not scheduled");
// the step-down line then says how long it was not run (stalled_ms), so a
// needless move is told apart from a lost network. It ticks every
// lease/2, only while leading, so an idle follower pays nothing.
type stallWatch struct {
	period time.Duration
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	last    time.Time // the last tick seen
	longest time.Duration
	at      time.Time // when longest ended
}

func newStallWatch(lease time.Duration) *stallWatch {
	w := &stallWatch{period: max(lease/2, time.Millisecond), stop: make(chan struct{}), done: make(chan struct{}), last: time.Now()}
	go w.run()
	return w
}

func (w *stallWatch) run() {
	defer close(w.done)
	t := time.NewTicker(w.period)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.note(time.Now())
		}
	}
}

// note records a tick seen at now: anything past one period since the
// last one is time the watch was not run.
func (w *stallWatch) note(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.at) > stallMemory {
		w.longest = 0 // too old to blame
	}
	if late := now.Sub(w.last) - w.period; late > w.longest {
		w.longest, w.at = late, now
	}
	w.last = now
}

// stallMemory is how long a stall is remembered: past it, a step-down is
// not blamed on it.
const stallMemory = 2 * time.Second

// end stops the watch and returns the longest stall that ended within
// stallMemory, counting the one in progress (the watch's goroutine may not
// have run yet since the elector was scheduled again).
func (w *stallWatch) end() time.Duration {
	close(w.stop)
	<-w.done
	return w.longestAt(time.Now())
}

func (w *stallWatch) longestAt(now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	longest := time.Duration(0)
	if now.Sub(w.at) <= stallMemory {
		longest = w.longest
	}
	return max(longest, now.Sub(w.last)-w.period)
}

package supervisor

import (
	"runtime"

	"github.com/rs/zerolog"
)

// spawner starts every plugin from one OS thread that never exits. Pdeathsig
// fires when the thread that forked a child dies, not the process: a child
// started from an ordinary goroutine's thread could be killed whenever the Go
// runtime retires that thread. Locked for good, this thread dies only with
// the supervisor, which is exactly when the plugins must go.
type spawner struct {
	jobs chan func()
}

func newSpawner() *spawner { return newSpawnerAt(nil) }

// newNormalSpawner is a spawner whose thread runs at the normal class, nice
// 0 (sched.go), so the processes it starts (every plugin, every hook) do not
// inherit the supervisor's realtime class or raised priority; the elector
// and the announcer are raised once configured (raiseCritical). The class is
// checked before every start: the supervisor may set its threads (this one
// among them) after the spawner was made.
func newNormalSpawner(log zerolog.Logger) *spawner {
	return newSpawnerAt(func() {
		if err := normalPriority(); err != nil {
			log.Warn().Err(err).Msg("scheduling: cannot set the thread that starts the balancer, checker and hooks to the normal class; they inherit the supervisor's priority")
		}
	})
}

// newSpawnerAt is a spawner that runs before (non-nil) on its thread before
// every job.
func newSpawnerAt(before func()) *spawner {
	s := &spawner{jobs: make(chan func())}
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		for job := range s.jobs {
			if before != nil {
				before()
			}
			job()
		}
	}()
	return s
}

// do runs f on the spawner thread and waits for it.
func (s *spawner) do(f func()) {
	done := make(chan struct{})
	s.jobs <- func() { defer close(done); f() }
	<-done
}

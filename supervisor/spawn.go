package supervisor

import (
	"runtime"
)

// spawner starts every plugin from one OS thread that never exits. Pdeathsig
// fires when the thread that forked a child dies, not the process: a child
// started from an ordinary goroutine's thread could be killed whenever the Go
// runtime retires that thread. Locked for good, this thread dies only with
// the supervisor, which is exactly when the plugins must go.
type spawner struct {
	jobs chan func()
}

func newSpawner() *spawner {
	s := &spawner{jobs: make(chan func())}
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		for job := range s.jobs {
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

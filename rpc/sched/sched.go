// Package sched sets the CPU scheduling of keep-vip's processes: the ones
// whose timing is the VIP's safety (the supervisor, the elector, the
// announcer) run ahead of everything else on a saturated host, the others
// (balancer, checker, hooks) at the normal class.
//
// Three classes, strongest first:
//
//   - Realtime: SCHED_RR at priority 1 for every thread of the process, as
//     keepalived runs its VRRP process. A runnable realtime thread preempts
//     every normal one at once, so a leader's heartbeats and lease check
//     are not late behind a CPU hog. Priority 1 is the lowest realtime
//     priority: below every kernel thread and every other realtime process
//     the operator runs.
//   - Raised: the normal class at nice -10 (about ten times a nice-0
//     thread's CPU share, but still queued behind it for a time slice).
//   - Normal: the normal class at nice 0.
//
// A realtime process that spins (a bug) would own a CPU, up to the kernel's
// realtime throttle. So Set(Realtime) first caps RLIMIT_RTTIME (CPU time a
// realtime thread may run without blocking) at RTTimeSoft, and WatchRTTime
// turns the SIGXCPU the kernel sends at that cap into a fall back to Raised
// for the whole process; RTTimeHard (SIGKILL) is only reached if that fall
// back itself does not run. Healthy keep-vip processes block on the network
// or a timer every few milliseconds, far below the cap.
package sched

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Class is a scheduling class for a process or a thread.
type Class int

const (
	Normal Class = iota
	Raised
	Realtime
)

const (
	// RaisedNice is the nice value of Raised, and of Realtime's threads
	// once they fall back.
	RaisedNice = -10
	// RTPriority is Realtime's SCHED_RR priority: the lowest.
	RTPriority = 1
	// RTTimeSoft is the realtime CPU time without blocking after which a
	// process falls back to Raised (SIGXCPU, WatchRTTime).
	RTTimeSoft = 200 * time.Millisecond
	// RTTimeHard is where the kernel kills a realtime thread that kept
	// spinning past RTTimeSoft (SIGKILL).
	RTTimeHard = time.Second
)

func (c Class) String() string {
	switch c {
	case Normal:
		return "normal"
	case Raised:
		return "raised"
	case Realtime:
		return "realtime"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// ParseClass reads a class by its name; "" is Realtime, the default.
func ParseClass(s string) (Class, error) {
	switch s {
	case "", "realtime":
		return Realtime, nil
	case "raised":
		return Raised, nil
	case "normal":
		return Normal, nil
	}
	return 0, fmt.Errorf("%q: want realtime, raised or normal", s)
}

// attr is the sched_setattr argument for c.
func (c Class) attr() *unix.SchedAttr {
	switch c {
	case Realtime:
		return &unix.SchedAttr{Policy: unix.SCHED_RR, Priority: RTPriority}
	case Raised:
		return &unix.SchedAttr{Policy: unix.SCHED_NORMAL, Nice: RaisedNice}
	}
	return &unix.SchedAttr{Policy: unix.SCHED_NORMAL}
}

// SetThread sets the calling OS thread (lock the goroutine to it first) to
// c. A new thread, and a child process, inherit its creator's class.
func SetThread(c Class) error {
	if c == Realtime {
		if err := capRTTime(0); err != nil {
			return err
		}
	}
	if err := unix.SchedSetAttr(0, c.attr(), 0); err != nil {
		return fmt.Errorf("sched_setattr %s: %w", c, err)
	}
	return nil
}

// Set sets every thread of this process to c (on Linux the class belongs
// to a thread; threads made later inherit it from the thread that makes
// them). For Realtime, RLIMIT_RTTIME is capped first, so no thread runs
// realtime without the cap. It stops at the first thread it cannot set:
// the usual reason is a missing CAP_SYS_NICE, or a seccomp filter (systemd's
// RestrictRealtime, SystemCallFilter) refusing sched_setattr.
func Set(c Class) error { return SetProcess(0, c) }

// SetProcess is Set for the process pid (0: this one). The supervisor
// raises the elector and the announcer with it once they are configured, so
// their start-up work (the Go runtime, TLS keys, Raft's store) runs at the
// normal class instead of competing with a running elector at realtime.
// Raising another process needs CAP_SYS_NICE; capping its RLIMIT_RTTIME
// needs the same user (or CAP_SYS_RESOURCE).
func SetProcess(pid int, c Class) error {
	if c == Realtime {
		if err := capRTTime(pid); err != nil {
			return err
		}
	}
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	// Threads started during a walk are caught by the next.
	for pass := 0; pass < 3; pass++ {
		tasks, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("list threads: %w", err)
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetAttr(tid, c.attr(), 0); err != nil && err != unix.ESRCH {
				return fmt.Errorf("sched_setattr %s on thread %d: %w", c, tid, err)
			}
		}
	}
	return nil
}

// Current is the calling thread's class (a class it is not set to, such as
// nice -5, reads as the nearest: any realtime policy is Realtime, a
// negative nice Raised).
func Current() (Class, error) {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return 0, fmt.Errorf("sched_getattr: %w", err)
	}
	switch {
	case a.Policy == unix.SCHED_RR || a.Policy == unix.SCHED_FIFO:
		return Realtime, nil
	case a.Nice < 0:
		return Raised, nil
	}
	return Normal, nil
}

// capRTTime lowers RLIMIT_RTTIME of process pid (0: this one) to
// RTTimeSoft/RTTimeHard, keeping a lower limit already set (an operator's
// LimitRTTIME=). Lowering a limit needs no privilege.
func capRTTime(pid int) error {
	var cur unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_RTTIME, nil, &cur); err != nil {
		return fmt.Errorf("read RLIMIT_RTTIME: %w", err)
	}
	want := unix.Rlimit{Cur: uint64(RTTimeSoft.Microseconds()), Max: uint64(RTTimeHard.Microseconds())}
	want.Max = min(want.Max, cur.Max)
	want.Cur = min(want.Cur, cur.Cur, want.Max)
	if want == cur {
		return nil
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_RTTIME, &want, nil); err != nil {
		return fmt.Errorf("set RLIMIT_RTTIME %d/%dµs: %w", want.Cur, want.Max, err)
	}
	return nil
}

// rtTimeCapped is whether this process's RLIMIT_RTTIME has a soft limit:
// one set realtime later (SetProcess) falls back on SIGXCPU only if its
// watch runs already.
func rtTimeCapped() bool {
	var cur unix.Rlimit
	return unix.Prlimit(0, unix.RLIMIT_RTTIME, nil, &cur) == nil && cur.Cur != unix.RLIM_INFINITY
}

var watchOnce sync.Once

// WatchRTTime, when the calling thread runs realtime or RLIMIT_RTTIME has
// a soft limit (the supervisor caps it before it starts a plugin it may
// raise later, SetProcess), catches the SIGXCPU the kernel sends when a
// thread reaches that limit and sets the whole process to Raised; fellBack
// is then called once, with the error of that fall back if it failed. Call
// it at start; it does nothing in a process that neither runs realtime nor
// has the cap, and nothing the second time.
func WatchRTTime(fellBack func(error)) {
	if c, err := Current(); err != nil || (c != Realtime && !rtTimeCapped()) {
		return
	}
	watchOnce.Do(func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGXCPU)
		go func() {
			<-sig
			err := Set(Raised)
			if fellBack != nil {
				fellBack(err)
			}
			// Later ones (the kernel repeats it every second while a
			// thread still runs realtime) are drained, not left to the
			// default action.
			for range sig {
			}
		}()
	})
}

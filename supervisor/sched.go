package supervisor

import (
	"fmt"
	"os"
	"strconv"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/keep-vip/keep-vip/rpc"
)

// Scheduling priority. The VIP's safety and its needless moves are timing:
// a leader that is not scheduled for a lease timeout steps down, and a
// policy loop or announcer that is late leaves the VIP down longer. On a
// host whose CPUs are saturated (by the balancer's own traffic, or anything
// else), those few milliseconds of work must run first, as keepalived
// raises its VRRP process. So the supervisor raises its own nice value;
// the elector and the announcer inherit it at fork; the balancer and the
// checker are started from a thread set back to nice 0, so a busy balancer
// never competes with the election above its fair share.
//
// Nice, not a realtime class: a realtime Go process that spins (a bug, or
// a GC cycle of a large heap) would own a CPU until the kernel's realtime
// throttle; a raised nice value only weighs the scheduler's choice (at -10
// a runnable elector gets about ten times the CPU share of a nice-0 hog,
// and wakes ahead of it). Measured in TestBenchBusyHost.

// raisedNice is the nice value of the supervisor, the elector and the
// announcer. PriorityEnv set to "normal" leaves it at the inherited value
// (for measurement, and for hosts where it is not wanted).
const raisedNice = -10

// PriorityEnv chooses the supervisor's scheduling: "raised" (the default)
// or "normal".
const PriorityEnv = "KEEP_VIP_PRIORITY"

// priorityWanted reads PriorityEnv; a bad value is an error naming it.
func priorityWanted() (bool, error) {
	switch v := os.Getenv(PriorityEnv); v {
	case "", "raised":
		return true, nil
	case "normal":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%q: want raised or normal", PriorityEnv, v)
	}
}

// raisePriority sets every thread of this process to raisedNice (on Linux
// the nice value belongs to a thread, and a new thread inherits its
// creator's), unless it already runs at that or higher. It says in one line
// what it did, and why not when it could not (no CAP_SYS_NICE, or a
// seccomp filter without setpriority).
func raisePriority(log zerolog.Logger) {
	want, err := priorityWanted()
	if err != nil || !want {
		log.Info().Str("env", PriorityEnv).Msg("scheduling: priority left as inherited")
		return
	}
	if cur, err := threadNice(unix.Gettid()); err == nil && cur <= raisedNice {
		log.Info().Int("nice", cur).Msg("scheduling: priority already raised")
		return
	}
	// Threads started during a walk are caught by the next.
	for pass := 0; pass < 3; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			log.Warn().Err(err).Msg("scheduling: cannot list threads; running at normal priority")
			return
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, raisedNice); err != nil && err != unix.ESRCH {
				log.Warn().Err(err).Int("nice", raisedNice).
					Msg("scheduling: cannot raise priority (needs CAP_SYS_NICE and setpriority allowed); supervisor, elector and announcer run at normal priority")
				return
			}
		}
	}
	log.Info().Int("nice", raisedNice).Msg("scheduling: priority raised for the supervisor, elector and announcer")
}

// threadNice is tid's nice value (getpriority's raw value is 20-nice).
func threadNice(tid int) (int, error) {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, err
	}
	return 20 - p, nil
}

// normalPriority sets the calling thread back to nice 0 when it runs
// higher; lowering a priority needs no privilege.
func normalPriority() error {
	tid := unix.Gettid()
	if cur, err := threadNice(tid); err != nil || cur >= 0 {
		return err
	}
	return unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
}

// timingCritical is whether kind runs at the supervisor's priority: the
// elector (its lease) and the announcer (the acquire path); the balancer
// and the checker run at normal priority.
func timingCritical(kind string) bool {
	return kind == rpc.KindElector || kind == rpc.KindAnnouncer
}

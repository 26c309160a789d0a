package supervisor

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	"github.com/keep-vip/keep-vip/rpc/sched"
)

// Scheduling. The VIP's safety and its needless moves are timing: a leader
// that is not scheduled for a lease timeout steps down, and a policy loop or
// announcer that is late leaves the VIP down longer. On a host whose CPUs
// are saturated (by the balancer's own traffic, or anything else), those few
// milliseconds of work must run first, as keepalived runs its VRRP process
// realtime. So the supervisor sets itself realtime (SCHED_RR 1, RLIMIT_RTTIME
// capped, rpc/sched). Every plugin and event hook is started from a thread
// set back to the normal class at nice 0, so a busy balancer never competes
// with the election above its fair share; the elector and the announcer are
// set to the supervisor's class once configured (raiseCritical), not at
// fork: a starting process's burst of work (the Go runtime, TLS keys, Raft's
// store) at realtime is time taken from the running elector of this host,
// or of another member on the same machine, and restarting a member took
// the VIP off the leader so (docs/benchmarks.md "A busy host"). Measured in
// TestBenchBusyHost.

// PriorityEnv chooses the class of the supervisor, the elector and the
// announcer: "realtime" (the default), "raised" (nice -10) or "normal"
// (left as inherited: for measurement, and for hosts where it is not
// wanted).
const PriorityEnv = "KEEP_VIP_PRIORITY"

// priorityWanted reads PriorityEnv; a bad value is an error naming it.
func priorityWanted() (sched.Class, error) {
	c, err := sched.ParseClass(os.Getenv(PriorityEnv))
	if err != nil {
		return 0, fmt.Errorf("%s=%w", PriorityEnv, err)
	}
	return c, nil
}

// setPriority sets every thread of this process to the class PriorityEnv
// asks for. Realtime that the host refuses (no CAP_SYS_NICE, a seccomp
// filter, a cgroup without realtime budget) falls back to raised, and
// raised to inherited, each said in one line.
func setPriority(log zerolog.Logger) {
	want, err := priorityWanted()
	if err != nil {
		log.Error().Err(err).Msg("scheduling: priority left as inherited")
		return
	}
	if want == sched.Normal {
		log.Info().Str("env", PriorityEnv).Msg("scheduling: priority left as inherited")
		return
	}
	if want == sched.Realtime {
		err := sched.Set(sched.Realtime)
		if err == nil {
			sched.WatchRTTime(func(err error) { rpc.LogRTFallBack(log, err) })
			log.Info().Str("policy", "SCHED_RR").Int("priority", sched.RTPriority).
				Dur("rttime_soft_ms", sched.RTTimeSoft).Dur("rttime_hard_ms", sched.RTTimeHard).
				Msg("scheduling: realtime for the supervisor, elector and announcer")
			return
		}
		log.Warn().Err(err).Msg("scheduling: cannot run realtime (needs CAP_SYS_NICE, sched_setattr allowed and realtime not restricted); trying nice -10")
	}
	if err := sched.Set(sched.Raised); err != nil {
		log.Warn().Err(err).Int("nice", sched.RaisedNice).
			Msg("scheduling: cannot raise priority (needs CAP_SYS_NICE and sched_setattr allowed); supervisor, elector and announcer run at normal priority")
		return
	}
	log.Info().Int("nice", sched.RaisedNice).Msg("scheduling: priority raised for the supervisor, elector and announcer")
}

// normalPriority sets the calling thread to the normal class at nice 0 when
// it runs higher; lowering needs no privilege.
func normalPriority() error {
	c, err := sched.Current()
	if err != nil {
		return err
	}
	if c == sched.Normal {
		return nil
	}
	return sched.SetThread(sched.Normal)
}

// timingCritical is whether kind runs at the supervisor's priority: the
// elector (its lease) and the announcer (the acquire path); the balancer
// and the checker run at normal priority.
func timingCritical(kind string) bool {
	return kind == rpc.KindElector || kind == rpc.KindAnnouncer
}

// raiseCritical sets the plugin process pid to the supervisor's class (the
// one setPriority got, or Raised after a realtime fall back); nothing when
// the supervisor runs at normal priority. Call it from any goroutine but a
// spawner's (their threads are set apart).
func raiseCritical(pid int) error {
	c, err := sched.Current()
	if err != nil || c == sched.Normal {
		return err
	}
	return sched.SetProcess(pid, c)
}

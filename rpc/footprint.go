package rpc

import (
	"os"
	"runtime/debug"
	"strings"
	"time"
)

// Footprint is one process's Go runtime settings. Footprints holds every
// keep-vip process's, the one place they are set: the supervisor applies its
// row in its start command, a plugin its kind's row in its Serve call (a
// third-party plugin of a kind gets the built-in one's).
// docs/benchmarks.md ("Idle cost") gives what each setting was measured to
// buy. An operator's GOGC or GOMEMLIMIT in the environment wins over the
// table (the supervisor passes its environment on to the plugins).
type Footprint struct {
	// GCPercent is the GC's heap growth target (GOGC); 0 keeps Go's 100.
	GCPercent int
	// MemoryLimit is the GC's soft memory limit (GOMEMLIMIT) in bytes;
	// 0 sets none.
	MemoryLimit int64
	// SettleAfter is when, after start, the process collects its heap and
	// returns every free page to the OS once (debug.FreeOSMemory): start-up
	// (config, TLS, gRPC and Raft set-up, the first elections) leaves
	// garbage and free pages that Go's background scavenger keeps for
	// minutes. 0: never.
	SettleAfter time.Duration
	// DropStartupCode, at SettleAfter, drops the process's mappings of the
	// clean pages of its own executable (settle_linux.go): the start-up
	// code stops counting in its RSS, the page cache keeps the file, and
	// code that runs again is mapped again by a minor fault.
	DropStartupCode bool
	// Godebug is GODEBUG settings the process must start with: the runtime
	// reads them before main runs, so the supervisor puts them in a
	// plugin's environment (PluginEnv). Empty for the supervisor, which
	// cannot change its own.
	Godebug string
}

// Supervisor names the supervisor's row of Footprints; the plugins' rows
// are their kinds.
const Supervisor = "supervisor"

// settleAfter is past a plugin's Configure and a cluster's first election.
const settleAfter = 10 * time.Second

// sysmonAwake keeps the Go runtime's monitor thread (sysmon) out of its deep
// sleep. sysmon sleeps deeply whenever every processor is idle, unless a
// scheduler trace is asked for (runtime/proc.go, sysmon), and while it does,
// every system call wakes it and it polls at 20 µs before it sleeps again.
// The leader's elector enters several system calls per Raft RPC, ~70 RPCs a
// second at idle, so most of its context switches were sysmon's: 20 per RPC
// round trip, against ~8 with sysmon ticking every 10 ms instead, and about 40 %
// less CPU (docs/benchmarks.md, "Idle cost"). The trace interval is the
// longest there is (2^31-1 ms, 24.8 days; the first line comes once the
// host's monotonic clock passes it), and the supervisor logs such a line at
// debug level. The other processes are not given it: they make few system
// calls at idle (supervisor, announcer, checker) or their event loops return
// often (balancer), and the 10 ms tick costs them more than it saves (the
// balancer measured 160 -> 250 switches a second).
const sysmonAwake = "schedtrace=2147483647"

// Footprints is every keep-vip process's runtime settings.
//
// GOMAXPROCS is not capped here: one processor per plugin was measured to
// save about 1 MB of RSS each and no CPU that the noise of a shared host
// let us see, and the elector, supervisor and announcer are on the path
// that releases the VIP, where a second processor keeps one goroutine
// stuck in a system call from holding up the rest. The balancer sizes its
// own (one event loop per processor, plugins/balancer).
//
// DropStartupCode is off for the supervisor, the elector and the announcer:
// a handover runs code that idles unmapped, and mapping it again costs a
// page fault per 64 kB touched (20–40 µs each on the shared 2-CPU VM of the
// benchmarks); with all five dropping, the check-fails handover's median
// (verdict → VIP moved) went from 17–25 ms to 26–32 ms. The checker's and
// the balancer's work runs again at every check round and connection.
var Footprints = map[string]Footprint{
	Supervisor:    {SettleAfter: settleAfter},
	KindElector:   {SettleAfter: settleAfter, Godebug: sysmonAwake},
	KindAnnouncer: {SettleAfter: settleAfter},
	KindChecker:   {SettleAfter: settleAfter, DropStartupCode: true},
	KindBalancer:  {SettleAfter: settleAfter, DropStartupCode: true},
}

// ApplyFootprint applies the settings of process (a key of Footprints; any
// other name gets none) and returns them.
func ApplyFootprint(process string) Footprint {
	f := Footprints[process]
	if f.GCPercent != 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(f.GCPercent)
	}
	if f.MemoryLimit != 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(f.MemoryLimit)
	}
	if f.SettleAfter > 0 {
		time.AfterFunc(f.SettleAfter, func() {
			debug.FreeOSMemory()
			if f.DropStartupCode {
				// Best effort: a process that cannot is only larger.
				_, _ = dropStartupCode()
			}
		})
	}
	return f
}

// PluginEnv returns environ with the GODEBUG settings of kind's footprint
// put first in GODEBUG, so a setting the operator's GODEBUG names wins (the
// runtime applies the last one given).
func PluginEnv(kind string, environ []string) []string {
	ours := Footprints[kind].Godebug
	if ours == "" {
		return environ
	}
	const key = "GODEBUG="
	env := make([]string, 0, len(environ)+1)
	theirs := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, key); ok {
			theirs = v // like exec.Cmd, the last one counts
			continue
		}
		env = append(env, kv)
	}
	if theirs != "" {
		ours += "," + theirs
	}
	return append(env, key+ours)
}

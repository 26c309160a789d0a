package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// deathInterval is the check interval of the service-death bench: the
// default ChecksInterval, where a poll finds a dead service up to 2s late.
const deathInterval = 2 * time.Second

// TestBenchServiceDeath measures the client-visible outage when the
// holder's checked local service is killed at a random moment, with
// ChecksInterval 2s: keep-vip with its death watch (the default for a
// local service), keep-vip with the watch off, and keepalived (VRRPv3,
// advert_int 0.1, vrrp_script interval 2, fall 1) running the same check.
// The client connects to the VIP every 10ms.
//
// KEEPVIP_BENCH_TRIALS overrides the 20 trials; KEEPVIP_BENCH_ONLY=name runs
// one system (watch, nowatch, keepalived-v3).
func TestBenchServiceDeath(t *testing.T) {
	trials, only := benchKnobs(t)
	systems := []struct {
		key, name string
		run       func(t *testing.T) failoverSystem
	}{
		{"watch", "keep-vip, death watch (default)", func(t *testing.T) failoverSystem {
			return startKeepVIPFailoverWith(t, "", deathInterval, "")
		}},
		{"nowatch", "keep-vip, watch: false", func(t *testing.T) failoverSystem {
			return startKeepVIPFailoverWith(t, "", deathInterval, "    watch: false\n")
		}},
		{"keepalived-v3", "keepalived, VRRPv3 advert_int 0.1", func(t *testing.T) failoverSystem {
			return startKeepalivedFailoverWith(t, 0.1, true, deathInterval)
		}},
	}
	if _, err := exec.LookPath("keepalived"); err != nil && (only == "" || only == "keepalived-v3") {
		if err := benchAptInstall("keepalived"); err != nil {
			t.Logf("keepalived not installed, its runs are skipped: %v", err)
			systems = systems[:2]
		}
	}
	var results []failoverResult
	idle := map[string]time.Duration{}
	for _, s := range systems {
		if only != "" && only != s.key {
			continue
		}
		t.Run(s.key, func(t *testing.T) {
			start := time.Now()
			sys := s.run(t)
			if k, ok := sys.(*keepVIPFailover); ok {
				idle[s.key] = checkerIdleCPU(t, k)
			}
			r := runTrials(t, sys, s.name, trialPlan{checkFail: trials, phase: deathInterval})
			r.key = s.key
			results = append(results, r)
			t.Logf("%s: %d trials in %s", s.name, trials, time.Since(start).Round(time.Second))
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nservice death benchmark: the holder's checked service killed at a random moment, ChecksInterval %s;\n", deathInterval)
	fmt.Fprintf(&b, "client-visible outage in ms (client connects to the VIP every %s)\n", failoverProbeInterval)
	fmt.Fprintf(&b, "%-36s %6s %8s %8s %8s %8s %9s %s\n", "system", "n", "min", "median", "p95", "max", "2 holders", "checker CPU idle")
	by := map[string]failoverStats{}
	for _, r := range results {
		st := failoverStatsOf(r.checkFail)
		by[r.key] = st
		cpu := "-"
		if d, ok := idle[r.key]; ok {
			cpu = fmt.Sprintf("%s in %s", d, deathIdleWindow)
		}
		fmt.Fprintf(&b, "%-36s %6d %8s %8s %8s %8s %9d %s\n", r.name, len(r.checkFail), msString(st.min), msString(st.median), msString(st.p95), msString(st.max), r.splitBrain, cpu)
	}
	for _, theirs := range []string{"nowatch", "keepalived-v3"} {
		if w, ok := by["watch"]; ok && by[theirs].median > 0 {
			fmt.Fprintf(&b, "median ratio, watch / %s: %.2f\n", theirs, float64(w.median)/float64(by[theirs].median))
		}
	}
	t.Log(b.String())
	fmt.Print(b.String())
}

// deathIdleWindow is how long the checker's CPU is measured while nothing
// happens.
const deathIdleWindow = 20 * time.Second

// checkerIdleCPU is the CPU time node 1's checker plugin uses in
// deathIdleWindow while the service is up (with a 2s interval: ten runs,
// and with the watch one idle connection).
func checkerIdleCPU(t *testing.T, k *keepVIPFailover) time.Duration {
	t.Helper()
	pid, err := k.c.Node(1).PluginPID("keep-vip-checker")
	if err != nil {
		t.Fatalf("checker of node 1: %v", err)
	}
	before := lbBenchCPU(pid)
	time.Sleep(deathIdleWindow)
	return lbBenchCPU(pid) - before
}

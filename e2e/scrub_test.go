package e2e

import (
	"slices"
	"testing"
	"time"
)

// The VIP scrub (supervisor/scrub.go): an announcer killed with -9 leaves
// its VIP on the interface; the supervisor takes it off with a fresh
// announcer before it acts on anything else, so the VIP is on no member
// that does not lead, not even while the killed announcer's successor waits
// out the restart backoff.

// scrubLogged is the supervisor's line for a scrub that worked.
const scrubLogged = "took any VIP left behind off the interface with a fresh announcer"

// TestAnnouncerKill9OnHolderScrubs kills the holder's announcer and at once
// puts the holder in maintenance, so it hands leadership over while its
// announcer is dead: without the scrub the VIP would still be on it when
// the next leader adds it (the Sampler, every 5 ms, fails the test then).
func TestAnnouncerKill9OnHolderScrubs(t *testing.T) {
	c := StartCluster(t, 3)
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	supervisorPID := node.PID()

	oldPID, killedAt := kill9Plugin(t, node, "keep-vip-announcer")
	if _, err := node.supervisorCLI("maintenance", "on", "--reason", "e2e scrub"); err != nil {
		t.Fatalf("maintenance on: %v", err)
	}
	t.Logf("kill -9 keep-vip-announcer[%d] on holder %s, then maintenance on", oldPID, node.ID)

	holder := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	t.Logf("VIP on %s alone %s after the kill", c.Node(holder).ID, time.Since(killedAt).Round(time.Millisecond))
	newPID, took := waitPluginRestarted(t, node, "keep-vip-announcer", oldPID, supervisorPID)
	t.Logf("%s: announcer restarted as pid %d, %s after the kill", node.ID, newPID, took.Round(time.Millisecond))
	requireScrubLogged(t, node)
	if held, err := c.NodeHoldsVIP(leader); err != nil || held {
		t.Errorf("%s in maintenance holds the VIP (%v)", node.ID, err)
	}
	if _, err := node.supervisorCLI("maintenance", "off"); err != nil {
		t.Errorf("maintenance off: %v", err)
	}
}

// TestAnnouncerKill9OnFollowerScrubs kills a follower's announcer: the
// follower scrubs (finding nothing), its announcer comes back, and the VIP
// never leaves the leader.
func TestAnnouncerKill9OnFollowerScrubs(t *testing.T) {
	c := StartCluster(t, 3)
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	follower := leader%3 + 1
	node := c.Node(follower)
	supervisorPID := node.PID()

	oldPID, killedAt := kill9Plugin(t, node, "keep-vip-announcer")
	t.Logf("kill -9 keep-vip-announcer[%d] on follower %s", oldPID, node.ID)
	newPID, took := waitPluginRestarted(t, node, "keep-vip-announcer", oldPID, supervisorPID)
	t.Logf("%s: announcer restarted as pid %d, %s after the kill", node.ID, newPID, took.Round(time.Millisecond))
	if holder := c.WaitSingleHolder(electionBound, nil); holder != leader {
		t.Errorf("VIP moved to %s after a follower's announcer was killed", c.Node(holder).ID)
	}
	requireScrubLogged(t, node)
	for _, ch := range c.Sampler.TimelineSince(killedAt) {
		if !slices.Equal(ch.Holders, []int{leader}) {
			t.Errorf("VIP holders %v at +%s after the kill, want only %s", ch.Holders, ch.At.Sub(killedAt).Round(time.Millisecond), c.Node(leader).ID)
		}
	}
}

// requireScrubLogged fails unless node's supervisor logged a scrub.
func requireScrubLogged(t *testing.T, node *Node) {
	t.Helper()
	mustWaitFor(t, processBound, node.ID+" to log the scrub", func() (bool, string) {
		l := findLog(logLines(t, node.LogPath), scrubLogged, nil)
		return l != nil, "no line " + scrubLogged
	})
}

package e2e

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// membershipBound bounds a membership change: add as a non-voter, catch up,
// promote, remove, one step per reconcile pass.
const membershipBound = 60 * time.Second

// raftIDs are the ids in a status voters line "server1 (addr), server2 (addr)".
func raftIDs(list string) []string {
	if list == "none" || list == "" {
		return nil
	}
	var ids []string
	for _, v := range strings.Split(list, ", ") {
		ids = append(ids, strings.Fields(v)[0])
	}
	slices.Sort(ids)
	return ids
}

// waitVoters waits until every listed node's status says Raft's voters are
// exactly the servers of want, with no non-voter and no difference from its
// file.
func (c *Cluster) waitVoters(nodes []int, want ...int) {
	c.t.Helper()
	var ids []string
	for _, i := range want {
		ids = append(ids, fmt.Sprintf("server%d", i))
	}
	slices.Sort(ids)
	took := mustWaitFor(c.t, membershipBound, fmt.Sprintf("voters %v on nodes %v", ids, nodes), func() (bool, string) {
		for _, i := range nodes {
			st, err := c.Node(i).Status()
			switch {
			case err != nil:
				return false, err.Error()
			case st.Raft == nil:
				return false, c.Node(i).ID + ": no raft section (elector down?)"
			case !slices.Equal(raftIDs(st.Raft.Voters), ids) || st.Raft.Nonvoters != "none" || st.Raft.Differences != "none":
				return false, fmt.Sprintf("%s: voters %s, non-voters %s, differences %s", c.Node(i).ID, st.Raft.Voters, st.Raft.Nonvoters, st.Raft.Differences)
			}
		}
		return true, ""
	})
	c.t.Logf("voters %v on nodes %v after %s", ids, nodes, took.Round(time.Millisecond))
}

// setMembers rewrites the listed nodes' files to members and reloads the
// running ones.
func (c *Cluster) setMembers(nodes []int, members ...int) {
	c.t.Helper()
	for _, i := range nodes {
		n := c.Node(i)
		n.Rewrite(func(cfg *NodeConfig) { cfg.MemberIDs = members })
		if n.SupervisorRunning() {
			n.Reload()
		}
	}
}

// waitHolderAmong waits for a single holder among nodes and returns it.
func (c *Cluster) waitHolderAmong(nodes ...int) int {
	c.t.Helper()
	return c.WaitSingleHolder(electionBound, func(h int) bool { return slices.Contains(nodes, h) })
}

// TestMembershipReplaceMember follows the README's replace procedure: n3's
// server dies for good, n4 is started with the new list (it must wait, not
// hold the VIP, not disturb the leader), n1 and n2 are reloaded; the leader
// adds n4, promotes it and removes n3. Then n1 crashes: n2 and n4 still
// elect a single holder.
func TestMembershipReplaceMember(t *testing.T) {
	c := NewIdleCluster(t, 4)
	for i := 1; i <= 3; i++ {
		c.StartSlot(NodeConfig{Index: i, MemberIDs: []int{1, 2, 3}})
	}
	c.waitHolderAmong(1, 2, 3)
	c.Node(3).Kill9()
	holder := c.waitHolderAmong(1, 2)
	term := c.waitStatus(holder, "leader", func(st opsStatus) (bool, string) { return st.Role == "leader", st.Role }).Term

	n4 := c.StartSlot(NodeConfig{Index: 4, MemberIDs: []int{1, 2, 4}})
	st := c.waitStatus(4, "joining", func(st opsStatus) (bool, string) {
		return st.Raft != nil && st.Raft.State == "joining", fmt.Sprintf("%+v", st.Raft)
	})
	t.Logf("%s before it is added: raft %+v", n4.ID, *st.Raft)
	// A while beside the running cluster: no VIP, no disturbance.
	time.Sleep(3 * time.Second)
	if held, err := c.NodeHoldsVIP(4); err != nil || held {
		t.Fatalf("%s holds the VIP before being added (err %v)", n4.ID, err)
	}
	if st, err := c.Node(holder).Status(); err != nil || st.Role != "leader" || st.Term != term {
		t.Fatalf("the leader was disturbed by the waiting member: %+v (err %v), was leader in term %d", st, err, term)
	}
	// The files change first; validate --host tells the running member's
	// configuration from the file's before the reload applies it.
	for _, i := range []int{1, 2} {
		c.Node(i).Rewrite(func(cfg *NodeConfig) { cfg.MemberIDs = []int{1, 2, 4} })
	}
	cmd := exec.Command(c.Bins.Supervisor(), "validate", "--host", "-c", c.Node(1).ConfigPath)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "server4") || !strings.Contains(string(out), "server3") {
		t.Fatalf("validate --host with a new members list: %v: %s; want a note naming server3 and server4", err, out)
	}
	t.Logf("validate --host: %s", strings.TrimSpace(string(out)))

	c.setMembers([]int{1, 2, 3}, 1, 2, 4)
	c.waitVoters([]int{1, 2, 4}, 1, 2, 4)
	c.waitHolderAmong(1, 2, 4)

	c.Node(1).Kill9()
	h := c.waitHolderAmong(2, 4)
	t.Logf("after n1's crash, %s holds the VIP", c.Node(h).ID)
}

// TestMembershipGrowAndShrink grows 3 → 5, crashes two of the original
// three (a quorum of five remains), shrinks to the three live ones and then
// stops one of them: a single holder throughout.
func TestMembershipGrowAndShrink(t *testing.T) {
	c := NewIdleCluster(t, 5)
	for i := 1; i <= 3; i++ {
		c.StartSlot(NodeConfig{Index: i, MemberIDs: []int{1, 2, 3}})
	}
	c.waitHolderAmong(1, 2, 3)
	all := []int{1, 2, 3, 4, 5}
	for i := 4; i <= 5; i++ {
		c.StartSlot(NodeConfig{Index: i, MemberIDs: all})
	}
	c.setMembers([]int{1, 2, 3}, all...)
	c.waitVoters(all, all...)

	// Crash two of the original three, the holder first if it is one.
	holder := c.waitHolderAmong(all...)
	victims := []int{1, 2}
	if holder == 3 {
		victims = []int{3, 1}
	} else if holder == 2 {
		victims = []int{2, 1}
	}
	for _, v := range victims {
		c.Node(v).Kill9()
	}
	var live []int
	for _, i := range all {
		if !slices.Contains(victims, i) {
			live = append(live, i)
		}
	}
	c.waitHolderAmong(live...)

	// Shrink to the three live ones.
	c.setMembers(live, live...)
	c.waitVoters(live, live...)
	holder = c.waitHolderAmong(live...)

	// Stop one that does not hold the VIP: the other two keep one holder.
	stop := live[0]
	if stop == holder {
		stop = live[1]
	}
	c.Node(stop).Stop()
	var left []int
	for _, i := range live {
		if i != stop {
			left = append(left, i)
		}
	}
	c.waitHolderAmong(left...)
}

// TestMembershipAddressChangeAndRecover moves n3 to a second address of
// its host (restart n3, reload the others), then loses two of three members
// for good and recovers the survivor with `recover`.
func TestMembershipAddressChangeAndRecover(t *testing.T) {
	c := NewIdleCluster(t, 3)
	for i := 1; i <= 3; i++ {
		c.StartSlot(NodeConfig{Index: i, MemberIDs: []int{1, 2, 3}})
	}
	c.waitHolderAmong(1, 2, 3)

	// Member 3's new address, in the cluster's subnet (NodeIP's hosts are
	// 11-13).
	moved := fmt.Sprintf("198.18.%d.53", c.Net.Subnet)
	if out, err := runIP("-n", c.Net.NodeNS[2], "addr", "add", moved+"/24", "dev", nodeIfName); err != nil {
		t.Fatalf("add %s to %s: %v: %s", moved, c.Node(3).ID, err, out)
	}
	for i := 1; i <= 3; i++ {
		c.Node(i).Rewrite(func(cfg *NodeConfig) { cfg.Addrs = map[int]string{3: moved} })
	}
	c.Node(3).Stop()
	restartSupervisor(c.Node(3))
	c.Node(1).Reload()
	c.Node(2).Reload()
	c.waitVoters([]int{1, 2, 3}, 1, 2, 3)
	st, err := c.Node(1).Status()
	if err != nil || !strings.Contains(st.Raft.Voters, moved) {
		t.Fatalf("voters %v (err %v): server3 not at %s", st.Raft, err, moved)
	}
	c.waitHolderAmong(1, 2, 3)

	// Two of three destroyed: no quorum, no VIP, for good.
	survivor := 1
	for _, i := range []int{2, 3} {
		c.Node(i).Kill9()
	}
	c.Node(survivor).Stop()
	c.Node(survivor).Rewrite(func(cfg *NodeConfig) { cfg.MemberIDs, cfg.Addrs = []int{survivor}, nil })
	if _, err := c.Node(survivor).supervisorCLI("recover"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("recover without --force: %v, want a refusal naming --force", err)
	}
	out, err := c.Node(survivor).supervisorCLI("recover", "--force")
	if err != nil {
		t.Fatalf("recover --force: %v", err)
	}
	t.Logf("recover: %s", strings.TrimSpace(out))
	restartSupervisor(c.Node(survivor))
	c.waitHolderAmong(survivor)
	c.waitVoters([]int{survivor}, survivor)
}

package elector

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func TestDifferences(t *testing.T) {
	ms := newMemberSet([]*pb.Member{{Id: "a", Address: "1:1"}, {Id: "b", Address: "2:2"}, {Id: "d", Address: "4:4"}})
	conf := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "a", Address: "1:1"},
		{Suffrage: raft.Voter, ID: "b", Address: "9:9"},
		{Suffrage: raft.Voter, ID: "c", Address: "3:3"},
	}}
	tests := []struct {
		name string
		conf raft.Configuration
		want string
	}{
		{"match", ms.configuration(), ""},
		{"replace and move", conf, "b: address 2:2 in members, 9:9 in the Raft configuration; d (4:4): in members, not in the Raft configuration; c (3:3): in the Raft configuration, not in members"},
		{"non-voter", raft.Configuration{Servers: []raft.Server{
			{Suffrage: raft.Voter, ID: "a", Address: "1:1"}, {Suffrage: raft.Voter, ID: "b", Address: "2:2"},
			{Suffrage: raft.Nonvoter, ID: "d", Address: "4:4"},
		}}, "d (4:4): not yet a voter"},
		{"empty", raft.Configuration{}, "a (1:1): in members, not in the Raft configuration; b (2:2): in members, not in the Raft configuration; d (4:4): in members, not in the Raft configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := joinDifferences(ms.differences(tt.conf)); got != tt.want {
				t.Errorf("differences:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
	// The fingerprint is the list's, whatever its order.
	other := newMemberSet([]*pb.Member{{Id: "d", Address: "4:4"}, {Id: "a", Address: "1:1"}, {Id: "b", Address: "2:2", Priority: 5}})
	if other.fingerprint != ms.fingerprint {
		t.Errorf("fingerprint depends on order or priority: %s vs %s", other.fingerprint, ms.fingerprint)
	}
	if moved := newMemberSet([]*pb.Member{{Id: "a", Address: "1:1"}, {Id: "b", Address: "2:3"}, {Id: "d", Address: "4:4"}}); moved.fingerprint == ms.fingerprint {
		t.Error("fingerprint ignores an address")
	}
}

// status returns e's Status details.
func status(t *testing.T, e *Elector) (string, map[string]string) {
	t.Helper()
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.GetState(), st.GetDetails()
}

// reconfigure gives a running elector a new member list, as a reload does.
func reconfigure(t *testing.T, e *Elector, cfg *pb.ElectorConfig, members []*pb.Member) *pb.ElectorConfig {
	t.Helper()
	c := proto.Clone(cfg).(*pb.ElectorConfig)
	c.Members = members
	if err := e.Configure(context.Background(), c); err != nil {
		t.Fatalf("reconfigure %s: %v", c.GetLocalId(), err)
	}
	return c
}

// waitVoters waits until every elector in es reports exactly want as Raft's
// voters, no non-voter, and no difference from its members.
func waitVoters(t *testing.T, es []*Elector, want ...string) {
	t.Helper()
	waitFor(t, "voters "+strings.Join(want, ","), func() (bool, string) {
		for _, e := range es {
			st, err := e.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			d, es := st.GetDetails(), st.GetElector()
			var got []string
			voters := true
			for _, srv := range es.GetServers() {
				got = append(got, srv.GetId())
				voters = voters && srv.GetVoter()
			}
			if fmt.Sprint(sortedCopy(got)) != fmt.Sprint(sortedCopy(want)) || !voters || len(es.GetMembershipDifferences()) > 0 {
				return false, fmt.Sprintf("%s: servers %v, differences %q (details: voters %s, non-voters %s, differences %s)", d["local_id"],
					es.GetServers(), es.GetMembershipDifferences(), d[statusVoters], d[statusNonvoters], d[statusDifferences])
			}
			if v := gauge(t, e, MetricMembershipDifferences); v != 0 {
				return false, fmt.Sprintf("%s: %s = %g", d["local_id"], MetricMembershipDifferences, v)
			}
		}
		return true, ""
	})
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// leaders lists the ids of es that lead now.
func leaders(es []*Elector) []string {
	var out []string
	for _, e := range es {
		if n := e.node.Load(); n != nil && n.r.State() == raft.Leader {
			out = append(out, n.localID)
		}
	}
	return out
}

// TestMembershipReplaceAMember: n2 dies for good, n3 replaces it. n3 starts
// with the new list beside the running cluster and must wait, never leading
// and never bootstrapping; once the survivors reload the list, the leader
// adds n3, promotes it, and only then removes n2. The new cluster then
// survives the loss of one of the old members.
func TestMembershipReplaceAMember(t *testing.T) {
	cfgs := clusterConfigs(t, 4)
	all := cfgs[0].GetMembers()
	old := all[:3]
	for _, c := range cfgs[:3] {
		c.Members = old
	}
	c := startCluster(t, cfgs[:3])
	c.agreed()
	waitVoters(t, c.nodes, "n0", "n1", "n2")

	c.nodes[2].Close()
	next := []*pb.Member{all[0], all[1], all[3]}
	cfgs[3].Members = next
	e3 := startElector(t, cfgs[3])
	// Waiting, and seen as such, for a while: it never leads.
	deadline := time.Now().Add(4 * testHeartbeatMs * time.Millisecond)
	for time.Now().Before(deadline) {
		if st, d := status(t, e3); st != StateJoining {
			t.Fatalf("new member before being added: state %q (%v), want %q", st, d, StateJoining)
		}
		if ls := leaders([]*Elector{e3}); len(ls) > 0 {
			t.Fatal("new member leads before being added")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !e3.node.Load().sawCluster.Load() {
		t.Error("new member did not notice the running cluster")
	}

	survivors := []*Elector{c.nodes[0], c.nodes[1], e3}
	cfgs[0] = reconfigure(t, c.nodes[0], cfgs[0], next)
	cfgs[1] = reconfigure(t, c.nodes[1], cfgs[1], next)
	waitVoters(t, survivors, "n0", "n1", "n3")

	// Node crash of an old member: n3 and the other one still elect.
	var alive []*Elector
	if ls := leaders(survivors); len(ls) == 1 && ls[0] != "n3" {
		for _, e := range survivors {
			if e.node.Load().localID == ls[0] {
				e.Close()
			} else {
				alive = append(alive, e)
			}
		}
	} else {
		c.nodes[0].Close()
		alive = []*Elector{c.nodes[1], e3}
	}
	waitFor(t, "one leader among the two left", func() (bool, string) {
		ls := leaders(alive)
		return len(ls) == 1, fmt.Sprint(ls)
	})
}

// TestMembershipGrowAndShrink grows 3 → 5 by reloading the list on the
// running members, then shrinks back to 3 by stopping two and reloading.
func TestMembershipGrowAndShrink(t *testing.T) {
	cfgs := clusterConfigs(t, 5)
	all := cfgs[0].GetMembers()
	for _, c := range cfgs[:3] {
		c.Members = all[:3]
	}
	c := startCluster(t, cfgs[:3])
	c.agreed()
	es := append([]*Elector(nil), c.nodes...)
	for i := 3; i < 5; i++ {
		es = append(es, startElector(t, cfgs[i]))
	}
	for i := range 3 {
		cfgs[i] = reconfigure(t, es[i], cfgs[i], all)
	}
	waitVoters(t, es, "n0", "n1", "n2", "n3", "n4")

	// Shrink: stop n3 and n4 (the leader among them hands over on its own
	// when its supervisor stops it; here Close does the same job), then
	// reload the list on the three that stay.
	es[3].Close()
	es[4].Close()
	for i := range 3 {
		cfgs[i] = reconfigure(t, es[i], cfgs[i], all[:3])
	}
	waitVoters(t, es[:3], "n0", "n1", "n2")
	waitFor(t, "one leader", func() (bool, string) {
		ls := leaders(es[:3])
		return len(ls) == 1, fmt.Sprint(ls)
	})
}

// TestMembershipAddressChange moves n2 to a new port: it restarts on its own
// data dir at the new address; the leader demotes it, updates the address
// and promotes it again.
func TestMembershipAddressChange(t *testing.T) {
	c := newCluster(t, 3)
	c.agreed()
	moved := proto.Clone(c.cfgs[2]).(*pb.ElectorConfig)
	members := make([]*pb.Member, 3)
	for i, m := range c.cfgs[0].GetMembers() {
		members[i] = proto.Clone(m).(*pb.Member)
	}
	members[2].Address = freeAddrs(t, 1)[0]
	moved.Members = members
	c.nodes[2].Close()
	e2 := startElector(t, moved)
	for i := range 2 {
		c.cfgs[i] = reconfigure(t, c.nodes[i], c.cfgs[i], members)
	}
	es := []*Elector{c.nodes[0], c.nodes[1], e2}
	waitVoters(t, es, "n0", "n1", "n2")
	st, err := c.nodes[0].Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, srv := range st.GetElector().GetServers() {
		found = found || srv.GetId() == "n2" && srv.GetAddress() == members[2].Address
	}
	if !found {
		t.Errorf("servers %v: n2 not at its new address %s", st.GetElector().GetServers(), members[2].Address)
	}
}

// TestRecoverFromOneSurvivor: two of three members are gone for good; the
// survivor's stored configuration is rewritten to itself alone, and it
// leads after a restart.
func TestRecoverFromOneSurvivor(t *testing.T) {
	c := newCluster(t, 3)
	c.agreed()
	for _, e := range c.nodes {
		e.Close()
	}
	cfg := proto.Clone(c.cfgs[0]).(*pb.ElectorConfig)
	cfg.Members = cfg.Members[:1]
	if _, err := Recover(cfg.GetDataDir(), "n1", cfg.GetMembers()); err == nil || !strings.Contains(err.Error(), "not among the members") {
		t.Errorf("recover as a member not in the list: %v", err)
	}
	if _, err := Recover(t.TempDir(), "n0", cfg.GetMembers()); err == nil {
		t.Error("recover of an empty data dir succeeded")
	}
	conf, err := Recover(cfg.GetDataDir(), "n0", cfg.GetMembers())
	if err != nil {
		t.Fatal(err)
	}
	if len(conf.Servers) != 1 {
		t.Fatalf("recovered %v", conf)
	}
	stored, err := StoredConfiguration(cfg.GetDataDir(), "n0")
	if err != nil || len(stored.Servers) != 1 || stored.Servers[0].ID != "n0" {
		t.Fatalf("stored configuration after recover: %v, %v", stored, err)
	}
	e := startElector(t, cfg)
	waitFor(t, "the survivor to lead alone", func() (bool, string) {
		ls := leaders([]*Elector{e})
		return len(ls) == 1, fmt.Sprint(ls)
	})
	waitVoters(t, []*Elector{e}, "n0")
}

// TestFreshMembersBootstrapOnlyTogether: a first install bootstraps once a
// quorum of members are up, and a lone new member does not.
func TestFreshMembersBootstrapOnlyTogether(t *testing.T) {
	cfgs := clusterConfigs(t, 3)
	e0 := startElector(t, cfgs[0])
	time.Sleep(5 * testHeartbeatMs * time.Millisecond)
	if st, _ := status(t, e0); st != StateJoining {
		t.Fatalf("a lone new member of three: state %q, want %q", st, StateJoining)
	}
	e1 := startElector(t, cfgs[1])
	waitFor(t, "a leader of the first two", func() (bool, string) {
		ls := leaders([]*Elector{e0, e1})
		return len(ls) == 1, fmt.Sprint(ls)
	})
	e2 := startElector(t, cfgs[2])
	waitVoters(t, []*Elector{e0, e1, e2}, "n0", "n1", "n2")
}

// The elector binary's offline requests that need no data dir: a running
// member's servers compared with the file, and an empty data dir, which
// has nothing stored to differ; an unknown op is refused.
func TestOfflineDifferences(t *testing.T) {
	members := []*pb.Member{{Id: "a", Address: "198.18.0.1:1"}, {Id: "b", Address: "198.18.0.2:1"}}
	cfg := &pb.ElectorConfig{LocalId: "a", Members: members, DataDir: t.TempDir()}
	reply, err := Offline(&pb.ElectorOfflineRequest{Op: pb.ElectorOfflineRequest_OP_DIFFERENCES, Config: cfg,
		Servers: []*pb.ConsensusServer{{Id: "a", Address: "198.18.0.1:1", Voter: true}, {Id: "b", Address: "198.18.0.9:1", Voter: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := reply.GetDifferences(); len(d) != 1 || !strings.Contains(d[0], "b: address 198.18.0.2:1 in members, 198.18.0.9:1 in the Raft configuration") {
		t.Errorf("differences %q", d)
	}
	reply, err = Offline(&pb.ElectorOfflineRequest{Op: pb.ElectorOfflineRequest_OP_DIFFERENCES, Config: cfg,
		Servers: []*pb.ConsensusServer{{Id: "a", Address: "198.18.0.1:1", Voter: true}, {Id: "b", Address: "198.18.0.2:1", Voter: true}}})
	if err != nil || len(reply.GetDifferences()) != 0 {
		t.Errorf("in line: %v, %v", reply, err)
	}
	reply, err = Offline(&pb.ElectorOfflineRequest{Op: pb.ElectorOfflineRequest_OP_STORED_DIFFERENCES, Config: cfg})
	if err != nil || len(reply.GetDifferences()) != 0 {
		t.Errorf("empty data dir: %v, %v", reply, err)
	}
	if _, err := Offline(&pb.ElectorOfflineRequest{Config: cfg}); err == nil {
		t.Error("no op: accepted")
	}
}

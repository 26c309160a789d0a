package supervisor

import (
	"strings"
	"testing"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Status's raft section comes from the elector's typed fields; details of
// the same names are for humans and are not read.
func TestRaftInfoFromTypedStatus(t *testing.T) {
	es := &pb.ElectorStatus{
		Joining:               true,
		Servers:               []*pb.ConsensusServer{{Id: "a", Address: "1:1", Voter: true}, {Id: "c", Address: "3:3"}, {Id: "b", Address: "2:2", Voter: true}},
		MembershipDifferences: []string{"c (3:3): a non-voter", "d (4:4): in members, not in the Raft configuration"},
		LastContact:           "12ms",
		Peers:                 map[string]string{"b": "last answer 10ms ago"},
	}
	f := statusElector{status: es, details: map[string]string{"raft_voters": "x (9:9)", "membership_differences": "none"}}
	o := &ops{elector: f}
	ri := o.raftInfo()
	want := RaftInfo{State: "leader", Joining: true, Voters: "a (1:1), b (2:2)", Nonvoters: "c (3:3)",
		Differences: "c (3:3): a non-voter; d (4:4): in members, not in the Raft configuration", LastContact: "12ms"}
	if ri.State != want.State || ri.Joining != want.Joining || ri.Voters != want.Voters || ri.Nonvoters != want.Nonvoters ||
		ri.Differences != want.Differences || ri.LastContact != want.LastContact || ri.Peers["b"] != "last answer 10ms ago" || len(ri.Servers) != 3 {
		t.Fatalf("raft info %+v, want %+v", *ri, want)
	}
	f.status = &pb.ElectorStatus{Servers: []*pb.ConsensusServer{{Id: "a", Address: "1:1", Voter: true}}}
	o.elector = f
	if ri := o.raftInfo(); ri.Differences != "none" || ri.Nonvoters != "none" || ri.Joining {
		t.Fatalf("in line: %+v", *ri)
	}
}

func TestFormatRaft(t *testing.T) {
	tests := []struct {
		name string
		ri   *RaftInfo
		want []string
	}{
		{"no elector", nil, []string{"(no elector running)"}},
		{"elector error", &RaftInfo{Error: "elector status: deadline exceeded"}, []string{"elector status: deadline exceeded"}},
		{"joining", &RaftInfo{State: "joining", Joining: true, Voters: "none", Nonvoters: "none", Differences: "a (1:1): in members, not in the Raft configuration"},
			[]string{"joining (no Raft configuration yet", "DIFFERS: a (1:1)"}},
		{"in line", &RaftInfo{State: "leader", Voters: "a (1:1), b (2:2)", Nonvoters: "none", Differences: "none",
			Peers: map[string]string{"b": "last answer 10ms ago"}},
			[]string{"voters      a (1:1), b (2:2)", "vs members  none", "peer b      last answer 10ms ago"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			formatRaft(&b, tt.ri)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in:\n%s", w, b.String())
				}
			}
		})
	}
}

// TestFormatStatusHealth: the text says what the JSON says, maintenance
// included.
func TestFormatStatusHealth(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   Status
		want string
	}{
		{"healthy", Status{Healthy: true, ChecksOK: true, InterfaceOK: true}, "health       healthy\n"},
		{"maintenance", Status{ChecksOK: true, InterfaceOK: true, Maintenance: Maintenance{On: true}}, "health       unhealthy: maintenance\n"},
		{"checks", Status{InterfaceOK: true}, "health       unhealthy: checks failing\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			FormatStatus(&b, &tc.st)
			if !strings.Contains(b.String(), tc.want) {
				t.Errorf("status text lacks %q:\n%s", tc.want, b.String())
			}
		})
	}
}

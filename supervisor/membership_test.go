package supervisor

import (
	"strings"
	"testing"
)

func TestFormatRaft(t *testing.T) {
	tests := []struct {
		name string
		ri   *RaftInfo
		want []string
	}{
		{"no elector", nil, []string{"(no elector running)"}},
		{"elector error", &RaftInfo{Error: "elector status: deadline exceeded"}, []string{"elector status: deadline exceeded"}},
		{"joining", &RaftInfo{State: "joining", Voters: "none", Nonvoters: "none", Differences: "a (1:1): in members, not in the Raft configuration"},
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

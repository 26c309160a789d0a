package supervisor

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keep-vip/keep-vip/elector"
)

// raftInfoTimeout bounds status's call to the elector.
const raftInfoTimeout = time.Second

// RaftInfo is the membership part of status: Raft's configuration as this
// member's elector sees it, and how it differs from the config file.
type RaftInfo struct {
	// State is the elector's word: leader, follower, candidate, or joining
	// (no Raft configuration yet: waiting to be added, or to bootstrap).
	State     string `json:"state"`
	Voters    string `json:"voters"`
	Nonvoters string `json:"nonvoters"`
	// Differences from the file's members; "none" when they match.
	Differences string `json:"differences"`
	// LastContact: a follower's last contact with the leader, as Raft
	// reports it; Peers: the leader's last contact with each other server.
	LastContact string            `json:"last_contact,omitempty"`
	Peers       map[string]string `json:"peers,omitempty"`
	Error       string            `json:"error,omitempty"`
}

// raftInfo asks the running elector; nil when none runs.
func (o *ops) raftInfo() *RaftInfo {
	o.mu.Lock()
	e := o.elector
	o.mu.Unlock()
	if e == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), raftInfoTimeout)
	defer cancel()
	st, err := e.Status(ctx)
	if err != nil {
		return &RaftInfo{Error: fmt.Sprintf("elector status: %v", err)}
	}
	d := st.GetDetails()
	ri := &RaftInfo{State: st.GetState(), Voters: d[elector.StatusVoters], Nonvoters: d[elector.StatusNonvoters],
		Differences: d[elector.StatusDifferences], LastContact: d["last_contact"]}
	for k, v := range d {
		if id, ok := strings.CutPrefix(k, "peer."); ok {
			if ri.Peers == nil {
				ri.Peers = map[string]string{}
			}
			ri.Peers[id] = v
		}
	}
	return ri
}

// formatRaft writes status's raft section.
func formatRaft(w io.Writer, ri *RaftInfo) {
	fmt.Fprintln(w, "\nraft:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	switch {
	case ri == nil:
		fmt.Fprintln(tw, "  (no elector running)")
		return
	case ri.Error != "":
		fmt.Fprintf(tw, "  %s\n", ri.Error)
		return
	}
	state := ri.State
	if state == elector.StateJoining {
		state += " (no Raft configuration yet: waiting to be added by the leader, or for enough new members to start a cluster)"
	}
	fmt.Fprintf(tw, "  state\t%s\n", state)
	fmt.Fprintf(tw, "  voters\t%s\n", ri.Voters)
	fmt.Fprintf(tw, "  non-voters\t%s\n", ri.Nonvoters)
	diff := ri.Differences
	if diff != "none" && diff != "" {
		diff = "DIFFERS: " + diff
	}
	fmt.Fprintf(tw, "  vs members\t%s\n", diff)
	if ri.LastContact != "" && ri.State != "leader" {
		fmt.Fprintf(tw, "  last contact\t%s\n", ri.LastContact)
	}
	ids := make([]string, 0, len(ri.Peers))
	for id := range ri.Peers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(tw, "  peer %s\t%s\n", id, ri.Peers[id])
	}
}

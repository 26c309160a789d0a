package supervisor

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// raftInfoTimeout bounds status's call to the elector.
const raftInfoTimeout = time.Second

// RaftInfo is the membership part of status: Raft's configuration as this
// member's elector sees it, and how it differs from the config file.
type RaftInfo struct {
	// State is the elector's word: leader, follower, candidate, or joining
	// (no Raft configuration yet: waiting to be added, or to bootstrap).
	State string `json:"state"`
	// Joining: no Raft configuration yet (waiting to be added, or to
	// bootstrap).
	Joining bool `json:"joining,omitempty"`
	// Servers is Raft's configuration; Voters and Nonvoters say it as
	// "id (address), ..." or "none".
	Servers   []RaftServer `json:"servers,omitempty"`
	Voters    string       `json:"voters"`
	Nonvoters string       `json:"nonvoters"`
	// Differences from the file's members; "none" when they match.
	Differences string `json:"differences"`
	// LastContact: a follower's last contact with the leader, as Raft
	// reports it; Peers: the leader's last contact with each other server.
	LastContact string            `json:"last_contact,omitempty"`
	Peers       map[string]string `json:"peers,omitempty"`
	Error       string            `json:"error,omitempty"`
}

// RaftServer is a server of Raft's configuration.
type RaftServer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// describeServers says servers of one suffrage as "id (address), ...", or
// "none".
func describeServers(servers []RaftServer, voters bool) string {
	var out []string
	for _, s := range servers {
		if s.Voter == voters {
			out = append(out, s.ID+" ("+s.Address+")")
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
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
	es := st.GetElector()
	ri := &RaftInfo{State: st.GetState(), Joining: es.GetJoining(), LastContact: es.GetLastContact(), Peers: es.GetPeers(),
		Differences: "none"}
	for _, srv := range es.GetServers() {
		ri.Servers = append(ri.Servers, RaftServer{ID: srv.GetId(), Address: srv.GetAddress(), Voter: srv.GetVoter()})
	}
	ri.Voters, ri.Nonvoters = describeServers(ri.Servers, true), describeServers(ri.Servers, false)
	if ds := es.GetMembershipDifferences(); len(ds) > 0 {
		ri.Differences = strings.Join(ds, "; ")
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
	if ri.Joining {
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

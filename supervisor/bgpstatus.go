package supervisor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// BGPPeerInfo is one BGP session of the announcer (bgp section), as
// status shows it.
type BGPPeerInfo struct {
	Address string `json:"address"`
	// State is the BGP session state: established, or idle, connect,
	// active, opensent, openconfirm while it is not.
	State string `json:"state"`
	// Advertised lists the VIP routes this router has from this member.
	Advertised []string `json:"advertised,omitempty"`
	// LastError is why the session last failed, when known.
	LastError string `json:"last_error,omitempty"`
}

// bgpInfo reads the announcer's sessions from its typed status; nil when
// no announcer runs or it has no BGP peers.
func (o *ops) bgpInfo() []BGPPeerInfo {
	o.mu.Lock()
	a := o.announcer
	o.mu.Unlock()
	if a == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), raftInfoTimeout)
	defer cancel()
	st, err := a.Status(ctx)
	if err != nil {
		return nil
	}
	var out []BGPPeerInfo
	for _, p := range st.GetAnnouncer().GetBgpPeers() {
		out = append(out, BGPPeerInfo{Address: p.GetAddress(), State: p.GetState(), Advertised: p.GetAdvertised(), LastError: p.GetLastError()})
	}
	return out
}

// formatBGP writes status's bgp section, when there is one.
func formatBGP(w io.Writer, peers []BGPPeerInfo) {
	if len(peers) == 0 {
		return
	}
	fmt.Fprintln(w, "\nbgp:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	for _, p := range peers {
		routes := "no routes"
		if len(p.Advertised) > 0 {
			routes = "advertising " + strings.Join(p.Advertised, ", ")
		}
		line := fmt.Sprintf("  %s\t%s\t%s", p.Address, p.State, routes)
		if p.LastError != "" && p.State != "established" {
			line += "\t" + p.LastError
		}
		fmt.Fprintln(tw, line)
	}
}

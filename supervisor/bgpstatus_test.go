package supervisor

import (
	"context"
	"strings"
	"testing"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// statusAnnouncer is fakeAnnouncer whose Status reports BGP peers.
type statusAnnouncer struct {
	fakeAnnouncer
	peers []*pb.BgpPeerStatus
}

func (a statusAnnouncer) Status(context.Context) (*pb.PluginStatus, error) {
	return &pb.PluginStatus{Announcer: &pb.AnnouncerStatus{BgpPeers: a.peers}}, nil
}

// Status's bgp section comes from the announcer's typed status, and shows
// each session's state, its routes, and why a session that is not up
// failed.
func TestBGPStatus(t *testing.T) {
	o := &ops{announcer: statusAnnouncer{fakeAnnouncer: fakeAnnouncer{j: &callLog{}}, peers: []*pb.BgpPeerStatus{
		{Address: "198.18.0.1", State: "established", Advertised: []string{"198.18.0.100/32"}},
		{Address: "198.18.0.2", State: "active", LastError: "connect: connection refused"},
	}}}
	info := o.bgpInfo()
	if len(info) != 2 || info[0].Advertised[0] != "198.18.0.100/32" || info[1].LastError != "connect: connection refused" {
		t.Fatalf("bgp info = %+v", info)
	}
	var b strings.Builder
	formatBGP(&b, info)
	for _, want := range []string{"\nbgp:\n", "198.18.0.1  established  advertising 198.18.0.100/32", "198.18.0.2  active       no routes  connect: connection refused"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
	b.Reset()
	formatBGP(&b, (&ops{}).bgpInfo())
	if b.Len() != 0 {
		t.Errorf("no announcer, yet a bgp section: %q", b.String())
	}
}

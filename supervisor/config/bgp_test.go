package config

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// The bgp section reaches the announcer key for key; the router id
// defaults to the member's IPv4 address. Its meaning (AS ranges, hold
// times, peers per family) is the announcer's to check.
func TestBGPSection(t *testing.T) {
	ipv6Member := Member{ID: "x", Address: "[2001:db8::11]:20000"}
	for _, tc := range []struct {
		name, section string
		member        Member // default: members[0], 198.18.0.11
		want          *pb.BgpConfig
		wantErr       string
	}{
		{name: "none", section: "", want: nil},
		{name: "full", section: `
bgp:
  asn: 65001
  routerID: 198.18.0.99
  communities: ["65000:100"]
  peers:
    - {address: 198.18.0.1, asn: 65000, password: s3cret, holdTime: 6, multihop: 2, port: 1179}
    - {address: "2001:db8::1", asn: 65000, holdTime: 3s}
`, want: &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.99", Communities: []string{"65000:100"}, Peers: []*pb.BgpPeer{
			{Address: "198.18.0.1", Asn: 65000, Password: "s3cret", HoldTimeMs: 6000, MultihopTtl: 2, Port: 1179},
			{Address: "2001:db8::1", Asn: 65000, HoldTimeMs: 3000},
		}}},
		{name: "router id defaults to the member's address", section: "\nBGP: {ASN: 65001, peers: [{address: 198.18.0.1, asn: 65000}]}\n",
			want: &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Peers: []*pb.BgpPeer{{Address: "198.18.0.1", Asn: 65000}}}},
		{name: "no default for an IPv6 member", section: "\nbgp: {asn: 65001, peers: [{address: 198.18.0.1, asn: 65000}]}\n", member: ipv6Member,
			want: &pb.BgpConfig{Asn: 65001, Peers: []*pb.BgpPeer{{Address: "198.18.0.1", Asn: 65000}}}},
		{name: "unknown peer key", section: "\nbgp: {asn: 65001, peers: [{address: 198.18.0.1, as: 65000}]}\n", wantErr: "bgp.peers[0].as: unknown key"},
		{name: "negative asn", section: "\nbgp: {asn: -1}\n", wantErr: "bgp.asn: -1 is out of range (0 to 4294967295)"},
		{name: "huge port", section: "\nbgp: {asn: 65001, peers: [{address: 198.18.0.1, asn: 65000, port: 5000000000}]}\n", wantErr: "bgp.peers[0].port: 5000000000 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(base+tc.section), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := tc.member
			if m.ID == "" {
				m = c.Members[0]
			}
			if got := c.AnnouncerConfigFor(m).GetBgp(); !proto.Equal(got, tc.want) {
				t.Errorf("bgp = %v, want %v", got, tc.want)
			}
			if c.AnnouncerConfig().GetBgp() != nil {
				t.Error("AnnouncerConfig (the scrub's) has a bgp part")
			}
		})
	}
}

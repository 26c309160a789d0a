package announcer

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	bgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func TestParseBGP(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.7.100"), netip.MustParseAddr("2001:db8::100")
	peer := func(mod func(*pb.BgpPeer)) *pb.BgpConfig {
		p := &pb.BgpPeer{Address: "198.18.0.1", Asn: 65000}
		if mod != nil {
			mod(p)
		}
		return &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Peers: []*pb.BgpPeer{p}}
	}
	for _, tc := range []struct {
		name    string
		cfg     *pb.BgpConfig
		vips    []netip.Addr
		wantErr string // substring; empty for success
		off     bool   // no BGP at all
	}{
		{name: "unset", cfg: nil, vips: []netip.Addr{v4}, off: true},
		{name: "empty", cfg: &pb.BgpConfig{}, vips: []netip.Addr{v4}, off: true},
		{name: "ok", cfg: peer(nil), vips: []netip.Addr{v4}},
		{name: "ok both families", cfg: &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Communities: []string{"65000:100"},
			Peers: []*pb.BgpPeer{{Address: "198.18.0.1", Asn: 65000}, {Address: "2001:db8::1", Asn: 65000, HoldTimeMs: 3000, MultihopTtl: 2, Port: 1179, Password: "s3cret"}}},
			vips: []netip.Addr{v4, v6}},
		{name: "no asn", cfg: &pb.BgpConfig{RouterId: "198.18.0.11", Peers: peer(nil).Peers}, vips: []netip.Addr{v4}, wantErr: "bgp.asn 0: must be between 1 and 4294967294"},
		{name: "as_trans", cfg: &pb.BgpConfig{Asn: 23456, RouterId: "198.18.0.11", Peers: peer(nil).Peers}, vips: []netip.Addr{v4}, wantErr: "bgp.asn 23456: is AS_TRANS"},
		{name: "no router id", cfg: &pb.BgpConfig{Asn: 65001, Peers: peer(nil).Peers}, vips: []netip.Addr{v4}, wantErr: "bgp.routerID: missing"},
		{name: "ipv6 router id", cfg: &pb.BgpConfig{Asn: 65001, RouterId: "2001:db8::11", Peers: peer(nil).Peers}, vips: []netip.Addr{v4}, wantErr: `bgp.routerID "2001:db8::11": must be an IPv4 address`},
		{name: "no peers", cfg: &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11"}, vips: []netip.Addr{v4}, wantErr: "bgp.peers: none"},
		{name: "bad peer address", cfg: peer(func(p *pb.BgpPeer) { p.Address = "router1" }), vips: []netip.Addr{v4}, wantErr: `bgp.peers[0].address "router1": not an IP address`},
		{name: "link-local peer", cfg: peer(func(p *pb.BgpPeer) { p.Address = "fe80::1" }), vips: []netip.Addr{v6}, wantErr: "bgp.peers[0].address fe80::1: not a unicast address"},
		{name: "peer asn", cfg: peer(func(p *pb.BgpPeer) { p.Asn = 0 }), vips: []netip.Addr{v4}, wantErr: "bgp.peers[0].asn 0"},
		{name: "short hold", cfg: peer(func(p *pb.BgpPeer) { p.HoldTimeMs = 1000 }), vips: []netip.Addr{v4}, wantErr: "bgp.peers[0].holdTime 1s: must be whole seconds between 3s and"},
		{name: "fractional hold", cfg: peer(func(p *pb.BgpPeer) { p.HoldTimeMs = 4500 }), vips: []netip.Addr{v4}, wantErr: "bgp.peers[0].holdTime 4.5s"},
		{name: "ttl", cfg: peer(func(p *pb.BgpPeer) { p.MultihopTtl = 256 }), vips: []netip.Addr{v4}, wantErr: "bgp.peers[0].multihop 256"},
		{name: "port", cfg: peer(func(p *pb.BgpPeer) { p.Port = 70000 }), vips: []netip.Addr{v4}, wantErr: "bgp.peers[0].port 70000"},
		{name: "password", cfg: peer(func(p *pb.BgpPeer) { p.Password = strings.Repeat("x", 81) }), vips: []netip.Addr{v4}, wantErr: "bgp.peers[0].password: longer than 80 bytes"},
		{name: "twice", cfg: &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Peers: []*pb.BgpPeer{{Address: "198.18.0.1", Asn: 65000}, {Address: "198.18.0.1", Asn: 65000}}}, vips: []netip.Addr{v4}, wantErr: "bgp.peers[1].address 198.18.0.1: listed twice"},
		{name: "no peer of the vip's family", cfg: peer(nil), vips: []netip.Addr{v4, v6}, wantErr: "bgp.peers: no IPv6 peer to advertise vip 2001:db8::100 to"},
		{name: "community", cfg: &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Peers: peer(nil).Peers, Communities: []string{"65000:70000"}}, vips: []netip.Addr{v4}, wantErr: `bgp.communities[0] "65000:70000"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBGP(tc.cfg, tc.vips)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != tc.off {
				t.Fatalf("config = %+v, want BGP off: %v", got, tc.off)
			}
			if got != nil && got.peers[0].hold == 0 {
				t.Errorf("hold time not defaulted: %+v", got.peers[0])
			}
		})
	}
}

// The MED orders holders by term: a later term is preferred (lower).
func TestMEDOrdersTerms(t *testing.T) {
	for _, terms := range [][2]uint64{{0, 1}, {1, 2}, {41, 42}, {1 << 31, 1<<31 + 1}} {
		if older, newer := medOf(terms[0]), medOf(terms[1]); newer >= older {
			t.Errorf("term %d has MED %d, not below term %d's %d", terms[1], newer, terms[0], older)
		}
	}
}

// testRouter is a GoBGP server standing in for a router, on loopback.
type testRouter struct {
	srv  *server.BgpServer
	port uint32
}

// startRouter listens on addr (a loopback address) with AS 65000 for a
// member of AS memberASN connecting from the same address.
func startRouter(t *testing.T, addr string, memberASN uint32) *testRouter {
	t.Helper()
	srv := server.NewBgpServer(server.LoggerOption(quietLogger{}))
	go srv.Serve()
	port := freePort(t, addr)
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "192.0.2.254", ListenPort: int32(port), ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatal(err)
	}
	fam := familyOf(netip.MustParseAddr(addr))
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: addr, PeerAsn: memberASN},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &testRouter{srv: srv, port: port}
}

// quietLogger keeps the test router's lines out of the test output.
type quietLogger struct{}

func (quietLogger) Panic(string, bgplog.Fields) {}
func (quietLogger) Fatal(string, bgplog.Fields) {}
func (quietLogger) Error(string, bgplog.Fields) {}
func (quietLogger) Warn(string, bgplog.Fields)  {}
func (quietLogger) Info(string, bgplog.Fields)  {}
func (quietLogger) Debug(string, bgplog.Fields) {}
func (quietLogger) SetLevel(bgplog.LogLevel)    {}
func (quietLogger) GetLevel() bgplog.LogLevel   { return bgplog.PanicLevel }

func freePort(t *testing.T, addr string) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// route is what the router learnt for a prefix.
type route struct {
	nexthop string
	med     uint32
	comms   []uint32
}

// routes reads the router's table for vip's family.
func (r *testRouter) routes(t *testing.T, vip netip.Addr) map[string]route {
	t.Helper()
	out := map[string]route{}
	err := r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyOf(vip)}, func(d *api.Destination) {
		for _, p := range d.Paths {
			var rt route
			for _, a := range p.Pattrs {
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Error(err)
					continue
				}
				switch x := m.(type) {
				case *api.MultiExitDiscAttribute:
					rt.med = x.Med
				case *api.NextHopAttribute:
					rt.nexthop = x.NextHop
				case *api.MpReachNLRIAttribute:
					rt.nexthop = x.NextHops[0]
				case *api.CommunitiesAttribute:
					rt.comms = x.Communities
				}
			}
			out[d.Prefix] = rt
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// syncBuffer is a log sink safe for GoBGP's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor fails t unless cond holds within 15s: sessions start in
// milliseconds on loopback, the bound is for a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !eventually(15*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func newTestSpeaker(t *testing.T) (*bgpSpeaker, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	b := newBGPSpeaker(zerolog.New(logs).Level(zerolog.InfoLevel), newMetrics())
	t.Cleanup(b.close)
	return b, logs
}

func configureSpeaker(t *testing.T, b *bgpSpeaker, c *pb.BgpConfig, vips ...netip.Addr) {
	t.Helper()
	parsed, err := parseBGP(c, vips)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.configure(c, parsed); err != nil {
		t.Fatal(err)
	}
}

// The holder's routes reach the router with the term's MED, the session's
// address as next hop and the communities; a new term replaces them, a
// withdraw removes them, and status says what each peer has.
func TestBGPAdvertiseWithdraw(t *testing.T) {
	for _, tc := range []struct{ name, addr, vip, prefix string }{
		{"ipv4", "127.0.0.1", "198.18.7.100", "198.18.7.100/32"},
		{"ipv6", "::1", "2001:db8::100", "2001:db8::100/128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRouter(t, tc.addr, 65001)
			b, logs := newTestSpeaker(t)
			vip := netip.MustParseAddr(tc.vip)
			c := &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Communities: []string{"65000:100"},
				Peers: []*pb.BgpPeer{{Address: tc.addr, Asn: 65000, Port: r.port, HoldTimeMs: 3000}}}
			configureSpeaker(t, b, c, vip)
			waitFor(t, "session up", func() bool {
				return testutil.ToFloat64(b.m.bgpUp.WithLabelValues(tc.addr)) == 1
			})
			if !strings.Contains(logs.String(), "bgp session established") {
				t.Errorf("no log line for the session: %s", logs)
			}
			if got := r.routes(t, vip); len(got) != 0 {
				t.Fatalf("routes before acquire: %v", got)
			}

			for _, term := range []uint64{5, 7} {
				if err := b.advertise([]netip.Addr{vip}, term); err != nil {
					t.Fatal(err)
				}
				want := route{nexthop: tc.addr, med: medOf(term), comms: []uint32{65000<<16 | 100}}
				waitFor(t, "route with term "+strconv.FormatUint(term, 10), func() bool {
					got, ok := r.routes(t, vip)[tc.prefix]
					return ok && got.nexthop == want.nexthop && got.med == want.med && len(got.comms) == 1 && got.comms[0] == want.comms[0]
				})
			}
			st := b.status()
			if len(st) != 1 || st[0].State != bgpStateEstablished || len(st[0].Advertised) != 1 || st[0].Advertised[0] != tc.prefix {
				t.Errorf("status = %v", st)
			}

			if err := b.withdraw(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "route withdrawn", func() bool { return len(r.routes(t, vip)) == 0 })
			if st := b.status(); len(st[0].Advertised) != 0 {
				t.Errorf("status after withdraw = %v", st)
			}
			if a, w := testutil.ToFloat64(b.m.bgpAdvertised.WithLabelValues(tc.vip)), testutil.ToFloat64(b.m.bgpWithdrawn.WithLabelValues(tc.vip)); a != 2 || w != 1 {
				t.Errorf("advertisements %v, withdrawals %v; want 2 and 1", a, w)
			}

			// Held when the speaker stops: the router loses the route
			// with the session.
			if err := b.advertise([]netip.Addr{vip}, 9); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "route again", func() bool { return len(r.routes(t, vip)) == 1 })
			b.close()
			waitFor(t, "route gone with the session", func() bool { return len(r.routes(t, vip)) == 0 })
		})
	}
}

// A route held before the session comes up is sent when it does.
func TestBGPRouteSentOnLateSession(t *testing.T) {
	r := startRouter(t, "127.0.0.1", 65001)
	b, _ := newTestSpeaker(t)
	vip := netip.MustParseAddr("198.18.7.100")
	// First a config pointing at a closed port, then the router's: a
	// changed config restarts the speaker; the routes go with it, and the
	// announcer advertises them again on Acquire.
	closed := freePort(t, "127.0.0.1")
	configureSpeaker(t, b, &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Peers: []*pb.BgpPeer{{Address: "127.0.0.1", Asn: 65000, Port: closed}}}, vip)
	c := &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11", Peers: []*pb.BgpPeer{{Address: "127.0.0.1", Asn: 65000, Port: r.port}}}
	configureSpeaker(t, b, c, vip)
	if err := b.advertise([]netip.Addr{vip}, 3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route on the late session", func() bool { return len(r.routes(t, vip)) == 1 })
	// The same config again keeps the session and the route.
	configureSpeaker(t, b, c, vip)
	time.Sleep(200 * time.Millisecond)
	if got := r.routes(t, vip); len(got) != 1 {
		t.Errorf("routes after configuring the same config: %v", got)
	}
}

// A router that is not there, or refuses this member's AS, is a warning
// naming the peer and the reason, and a metric; the speaker lives on.
func TestBGPRefusedSession(t *testing.T) {
	for _, tc := range []struct{ name, wantReason string }{
		{"nothing listening", "connection refused"},
		{"wrong AS", "the session closed while opening"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t, "127.0.0.1")
			if tc.name == "wrong AS" {
				port = startRouter(t, "127.0.0.1", 65099).port
			}
			b, logs := newTestSpeaker(t)
			vip := netip.MustParseAddr("198.18.7.100")
			configureSpeaker(t, b, &pb.BgpConfig{Asn: 65001, RouterId: "198.18.0.11",
				Peers: []*pb.BgpPeer{{Address: "127.0.0.1", Asn: 65000, Port: port}}}, vip)
			if !eventually(15*time.Second, func() bool { return strings.Contains(logs.String(), tc.wantReason) }) {
				t.Fatalf("no warning naming %q in:\n%s", tc.wantReason, logs)
			}
			line := ""
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, tc.wantReason) {
					line = l
					break
				}
			}
			for _, want := range []string{`"level":"warn"`, `"peer":"127.0.0.1"`, "bgp session not established"} {
				if !strings.Contains(line, want) {
					t.Errorf("line %s lacks %s", line, want)
				}
			}
			if n := testutil.ToFloat64(b.m.bgpErrors.WithLabelValues("127.0.0.1")); n < 1 {
				t.Errorf("%s = %v", metricBGPErrors, n)
			}
			if up := testutil.ToFloat64(b.m.bgpUp.WithLabelValues("127.0.0.1")); up != 0 {
				t.Errorf("%s = %v", metricBGPSessionUp, up)
			}
			// Holding works all the same: the route waits for a session.
			if err := b.advertise([]netip.Addr{vip}, 1); err != nil {
				t.Fatal(err)
			}
			if st := b.status(); st[0].State == bgpStateEstablished || !strings.Contains(st[0].LastError, tc.wantReason) {
				t.Errorf("status = %v", st)
			}
		})
	}
}

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// BGP mode on real binaries against BIRD 2 (Debian's bird2). The router
// is a namespace of its own on the members' segment; the client is in
// another namespace behind the router, with no segment shared with the
// members: it reaches the VIP only through the route the holder
// advertises. The router's address on the segment is a /28 (/120 for
// IPv6) holding the members but not the VIPs, so without a BGP route the
// router has no way to the VIP at all.

const (
	bgpRouterASN = 65000
	bgpMemberASN = 65001
	birdPath     = "/usr/sbin/bird"
	birdcPath    = "/usr/sbin/birdc"
	// bgpServicePort is each member's "service", answering its id on every
	// address: the answer shows which member the router sent the client to.
	bgpServicePort = 9002
	// bgpHoldTimer is the announcer's default, which BIRD's 240s defers to.
	bgpHoldTimer = 9 * time.Second
)

// bgpLab is a cluster whose members peer with BIRD in a router namespace.
type bgpLab struct {
	t        *testing.T
	c        *Cluster
	v6       bool
	refusing bool // members also peer with refuseIP
	routerNS string
	clientNS string
	dir      string
	birdSock string
	// The router's addresses on the segment; refuseIP is a second one on
	// which BIRD does not listen (strict bind): a peer that refuses.
	routerIP, routerIP6, refuseIP string
	vip6                          string
	services                      []*ServerProcess
}

func (l *bgpLab) sub() int { return l.c.Net.Subnet }

// with is l for subtest t: its waits fail t, not the parent test (as
// partition_test.go does with a Cluster).
func (l *bgpLab) with(t *testing.T) *bgpLab {
	sl, sc := *l, *l.c
	sc.t, sl.t, sl.c = t, t, &sc
	return &sl
}

func (l *bgpLab) memberIP6(i int) string { return fmt.Sprintf("2001:db8:%x::%d", l.sub(), 10+i) }

// startBGPLab starts 3 members rendering their config with base (nil:
// the harness's) plus a bgp section, BIRD, and the routed client. With v6
// the members also hold an IPv6 VIP, advertised over IPv6 sessions; with
// refusing they also peer with an address that refuses.
func startBGPLab(t *testing.T, v6, refusing bool, base func(NodeConfig, *Net) string) *bgpLab {
	t.Helper()
	if _, err := os.Stat(birdPath); err != nil {
		t.Skipf("BIRD 2 is not installed (%v): apt-get install bird2, or make deps", err)
	}
	c := NewIdleCluster(t, 3)
	keepLogs(t, c)
	n := c.Net
	l := &bgpLab{
		t: t, c: c, v6: v6, refusing: refusing, routerNS: n.name("rt"), clientNS: n.name("rc"), dir: t.TempDir(),
		routerIP: fmt.Sprintf("198.18.%d.1", n.Subnet), refuseIP: fmt.Sprintf("198.18.%d.3", n.Subnet),
		routerIP6: fmt.Sprintf("2001:db8:%x::1", n.Subnet), vip6: fmt.Sprintf("2001:db8:%x::100", n.Subnet),
	}
	l.birdSock = filepath.Join(l.dir, "bird.ctl")
	l.buildNetwork()
	l.startBIRD()
	for i := 1; i <= 3; i++ {
		c.StartSlot(NodeConfig{Index: i, Members: 3, Render: l.render(base)})
		addr := fmt.Sprintf("0.0.0.0:%d", bgpServicePort)
		l.services = append(l.services, NewServerProcess(t, n.NodeNS[i-1], addr, fmt.Sprintf("server%d", i)))
		if v6 {
			NewServerProcess(t, n.NodeNS[i-1], fmt.Sprintf("[::]:%d", bgpServicePort), fmt.Sprintf("server%d", i))
		}
	}
	// Before the members stop (cleanups run last first): what BIRD had.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, args := range [][]string{{"show", "protocols", "all"}, {"show", "route", "all"}} {
			o, err := l.birdc(args...)
			t.Logf("birdc %s: %v\n%s", strings.Join(args, " "), err, o)
		}
	})
	return l
}

// render is base with a bgp section: the router, the refusing address,
// and with v6 the IPv6 VIP and the router's IPv6 address.
func (l *bgpLab) render(base func(NodeConfig, *Net) string) func(NodeConfig, *Net) string {
	return func(c NodeConfig, n *Net) string {
		c.Render = base
		y := c.YAML(n)
		var b strings.Builder
		b.WriteString(y)
		if l.v6 {
			fmt.Fprintf(&b, "vips: ['%s']\n", l.vip6)
		}
		fmt.Fprintf(&b, "bgp:\n  asn: %d\n  peers:\n", bgpMemberASN)
		fmt.Fprintf(&b, "    - {address: %s, asn: %d}\n", l.routerIP, bgpRouterASN)
		if l.refusing {
			fmt.Fprintf(&b, "    - {address: %s, asn: %d}\n", l.refuseIP, bgpRouterASN)
		}
		if l.v6 {
			fmt.Fprintf(&b, "    - {address: '%s', asn: %d}\n", l.routerIP6, bgpRouterASN)
		}
		return b.String()
	}
}

func (l *bgpLab) ip(args ...string) {
	l.t.Helper()
	l.c.Net.mustIP(args...)
}

func (l *bgpLab) sysctl(ns string, kv ...string) {
	l.t.Helper()
	if out, err := l.c.Net.Exec(ns, append([]string{"sysctl", "-q", "-w"}, kv...)...); err != nil {
		l.t.Fatalf("sysctl in %s: %v: %s", ns, err, out)
	}
}

// buildNetwork puts the router on the segment and the client behind it.
func (l *bgpLab) buildNetwork() {
	l.t.Helper()
	n := l.c.Net
	s := n.Subnet
	n.addNamespace(l.routerNS)
	n.addNamespace(l.clientNS)
	ipv6On := []string{"net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"}
	if l.v6 {
		l.sysctl(l.routerNS, ipv6On...)
		l.sysctl(l.clientNS, ipv6On...)
	}
	l.sysctl(l.routerNS, "net.ipv4.ip_forward=1")
	if l.v6 {
		l.sysctl(l.routerNS, "net.ipv6.conf.all.forwarding=1")
	}
	// The router's leg on the segment: a port of the bridge like a member.
	peer := n.name("vr")
	l.ip("-n", n.BridgeNS, "link", "add", peer, "type", "veth", "peer", "name", nodeIfName, "netns", l.routerNS)
	l.ip("-n", n.BridgeNS, "link", "set", peer, "master", n.name("br"))
	l.ip("-n", n.BridgeNS, "link", "set", peer, "up")
	l.ip("-n", l.routerNS, "addr", "add", l.routerIP+"/28", "dev", nodeIfName)
	l.ip("-n", l.routerNS, "addr", "add", l.refuseIP+"/28", "dev", nodeIfName)
	if l.v6 {
		l.ip("-n", l.routerNS, "addr", "add", l.routerIP6+"/120", "dev", nodeIfName, "nodad")
	}
	l.ip("-n", l.routerNS, "link", "set", nodeIfName, "up")
	// The client's link to the router, in 198.19.X.0/24 (and 2001:db8:X:1::/64).
	l.ip("-n", l.routerNS, "link", "add", "eth1", "type", "veth", "peer", "name", nodeIfName, "netns", l.clientNS)
	l.ip("-n", l.routerNS, "addr", "add", fmt.Sprintf("198.19.%d.1/24", s), "dev", "eth1")
	l.ip("-n", l.clientNS, "addr", "add", fmt.Sprintf("198.19.%d.2/24", s), "dev", nodeIfName)
	if l.v6 {
		l.ip("-n", l.routerNS, "addr", "add", fmt.Sprintf("2001:db8:%x:1::1/64", s), "dev", "eth1", "nodad")
		l.ip("-n", l.clientNS, "addr", "add", fmt.Sprintf("2001:db8:%x:1::2/64", s), "dev", nodeIfName, "nodad")
	}
	l.ip("-n", l.routerNS, "link", "set", "eth1", "up")
	l.ip("-n", l.clientNS, "link", "set", nodeIfName, "up")
	l.ip("-n", l.clientNS, "route", "add", "default", "via", fmt.Sprintf("198.19.%d.1", s))
	if l.v6 {
		l.ip("-n", l.clientNS, "-6", "route", "add", "default", "via", fmt.Sprintf("2001:db8:%x:1::1", s))
	}
	for i, ns := range n.NodeNS {
		if l.v6 {
			// The address is kept across a link down (a crash trial).
			l.sysctl(ns, append(ipv6On, "net.ipv6.conf.eth0.disable_ipv6=0", "net.ipv6.conf.eth0.accept_dad=0",
				"net.ipv6.conf.eth0.keep_addr_on_down=1")...)
			l.ip("-n", ns, "addr", "add", l.memberIP6(i+1)+"/64", "dev", nodeIfName, "nodad")
		}
		l.routeToClient(i + 1)
	}
}

// routeToClient gives member i its route to the client, through the
// router; again after its link was down, which takes the route away.
func (l *bgpLab) routeToClient(i int) {
	l.t.Helper()
	ns, s := l.c.Net.NodeNS[i-1], l.sub()
	l.ip("-n", ns, "route", "replace", fmt.Sprintf("198.19.%d.0/24", s), "via", l.routerIP)
	if l.v6 {
		l.ip("-n", ns, "-6", "route", "replace", fmt.Sprintf("2001:db8:%x:1::/64", s), "via", l.routerIP6)
	}
}

// startBIRD runs BIRD in the router namespace: passive sessions with the
// three members, bound to routerIP only, best routes into the kernel.
func (l *bgpLab) startBIRD() {
	l.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog %q all;\n", l.routerIP, filepath.Join(l.dir, "bird.log"))
	b.WriteString("protocol device { scan time 2; }\n")
	b.WriteString("protocol kernel { ipv4 { import none; export all; }; }\n")
	if l.v6 {
		b.WriteString("protocol kernel { ipv6 { import none; export all; }; }\n")
	}
	// error wait time: after a session fails (a crashed member's hold
	// timer), BIRD refuses that member for 60s by default, doubling to
	// 300s; a member back and elected in that window would have no route.
	// The README recommends this setting.
	const birdErrorWait = "error wait time 1, 10;"
	fmt.Fprintf(&b, "template bgp members { local %s as %d; strict bind on; passive on; %s ipv4 { import all; export none; }; }\n",
		l.routerIP, bgpRouterASN, birdErrorWait)
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&b, "protocol bgp m%d from members { neighbor %s as %d; }\n", i, l.c.Net.NodeIP(i), bgpMemberASN)
	}
	if l.v6 {
		fmt.Fprintf(&b, "template bgp members6 { local %s as %d; strict bind on; passive on; %s ipv6 { import all; export none; }; }\n",
			l.routerIP6, bgpRouterASN, birdErrorWait)
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(&b, "protocol bgp m%dv6 from members6 { neighbor %s as %d; }\n", i, l.memberIP6(i), bgpMemberASN)
		}
	}
	conf := filepath.Join(l.dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.routerNS, birdPath, "-f", "-c", conf, "-s", l.birdSock, "-P", filepath.Join(l.dir, "bird.pid"))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start bird: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	l.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			l.t.Errorf("bird pid %d not gone 10s after SIGKILL", cmd.Process.Pid)
		}
		if l.t.Failed() {
			if log, err := os.ReadFile(filepath.Join(l.dir, "bird.log")); err == nil {
				l.t.Logf("bird.log:\n%s", tailLines(string(log), 60))
			}
		}
	})
	mustWaitFor(l.t, processBound, "bird's control socket", func() (bool, string) {
		out2, err := l.birdc("show", "status")
		return err == nil && strings.Contains(out2, "Daemon is up"), out.String() + out2
	})
}

func (l *bgpLab) birdc(args ...string) (string, error) {
	cmd := exec.Command(birdcPath, append([]string{"-s", l.birdSock}, args...)...)
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	timer := time.AfterFunc(10*time.Second, func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
		}
	})
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	close(done)
	return string(out), err
}

var birdVia = regexp.MustCompile(`\bvia ([0-9a-f:.]+)`)

// birdRoutes lists the next hops of every route BIRD has for prefix
// (best first), whichever member it came from.
func (l *bgpLab) birdRoutes(prefix string) ([]string, error) {
	out, err := l.birdc("show", "route", prefix)
	if strings.Contains(out, "Network not found") {
		return nil, nil // birdc exits 1 on it
	}
	if err != nil {
		return nil, fmt.Errorf("birdc show route %s: %v: %s", prefix, err, out)
	}
	var hops []string
	for _, m := range birdVia.FindAllStringSubmatch(out, -1) {
		hops = append(hops, m[1])
	}
	return hops, nil
}

// prefixes are the VIP host routes the holder advertises.
func (l *bgpLab) prefixes() []string {
	out := []string{l.c.Net.VIP() + "/32"}
	if l.v6 {
		out = append(out, l.vip6+"/128")
	}
	return out
}

// hopOf is member i's address in prefix's family.
func (l *bgpLab) hopOf(prefix string, i int) string {
	if strings.Contains(prefix, ":") {
		return l.memberIP6(i)
	}
	return l.c.Net.NodeIP(i)
}

// waitOnlyRoute waits until BIRD has exactly one route per VIP, from
// member i.
func (l *bgpLab) waitOnlyRoute(i int) {
	l.t.Helper()
	for _, p := range l.prefixes() {
		want := l.hopOf(p, i)
		mustWaitFor(l.t, electionBound, fmt.Sprintf("router's only route for %s via server%d (%s)", p, i, want), func() (bool, string) {
			return l.onlyRoute(p, i)
		})
	}
}

// onlyRoute says whether BIRD's only route for prefix is via member i,
// and what it has.
func (l *bgpLab) onlyRoute(prefix string, i int) (bool, string) {
	hops, err := l.birdRoutes(prefix)
	if err != nil {
		return false, err.Error()
	}
	return len(hops) == 1 && hops[0] == l.hopOf(prefix, i), fmt.Sprint(hops)
}

// waitSettled waits until one member has held the VIP for a while with
// the router's only routes via it, and returns that member. Where the
// holder is not forced (at start, after a heal), a move in between, such
// as a step-down on a loaded machine, then moves the expected route with
// it instead of failing on the first holder seen; every move is still
// checked by checkRouteFollowsHolder.
func (l *bgpLab) waitSettled(timeout time.Duration) int {
	l.t.Helper()
	h := l.c.WaitSingleHolder(timeout, func(n int) bool {
		for _, p := range l.prefixes() {
			if ok, _ := l.onlyRoute(p, n); !ok {
				return false
			}
		}
		return true
	})
	l.waitOnlyRoute(h) // names what the router has, should it move again
	return h
}

// waitClientReaches waits until the client, through the router, gets
// member i's answer on every VIP.
func (l *bgpLab) waitClientReaches(cl *Client, i int) {
	l.t.Helper()
	addrs := []string{net.JoinHostPort(l.c.Net.VIP(), strconv.Itoa(bgpServicePort))}
	if l.v6 {
		addrs = append(addrs, net.JoinHostPort(l.vip6, strconv.Itoa(bgpServicePort)))
	}
	for _, a := range addrs {
		mustWaitFor(l.t, electionBound, fmt.Sprintf("client reaches %s at server%d through the router", a, i), func() (bool, string) {
			reply, err := cl.Ask(a, time.Second)
			return err == nil && reply == fmt.Sprintf("server%d", i), fmt.Sprintf("%q %v", reply, err)
		})
	}
}

// routeSampler reads the router's kernel route to each VIP (BIRD's best)
// every few milliseconds and keeps the changes.
type routeSampler struct {
	h        *netlink.Handle
	prefixes []netip.Prefix
	stop     chan struct{}
	done     chan struct{}

	mu      sync.Mutex
	changes map[netip.Prefix][]routeChange
	errs    int
	lastErr string
}

type routeChange struct {
	At  time.Time
	Via string // "" when the router has no route
}

func (l *bgpLab) startRouteSampler() *routeSampler {
	l.t.Helper()
	nsh, err := netns.GetFromName(l.routerNS)
	if err != nil {
		l.t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(nsh)
	_ = nsh.Close()
	if err != nil {
		l.t.Fatal(err)
	}
	s := &routeSampler{h: h, stop: make(chan struct{}), done: make(chan struct{}), changes: map[netip.Prefix][]routeChange{}}
	for _, p := range l.prefixes() {
		s.prefixes = append(s.prefixes, netip.MustParsePrefix(p))
	}
	go s.run()
	l.t.Cleanup(func() {
		s.halt()
		h.Close()
	})
	return s
}

func (s *routeSampler) run() {
	defer close(s.done)
	deadline := time.Now().Add(samplerMaxRun)
	for time.Now().Before(deadline) {
		select {
		case <-s.stop:
			return
		case <-time.After(samplerInterval):
		}
		for _, p := range s.prefixes {
			via, err := s.read(p)
			s.mu.Lock()
			if err != nil {
				s.errs++
				s.lastErr = err.Error()
			} else if cs := s.changes[p]; len(cs) == 0 || cs[len(cs)-1].Via != via {
				s.changes[p] = append(cs, routeChange{At: time.Now(), Via: via})
			}
			s.mu.Unlock()
		}
	}
}

func (s *routeSampler) read(p netip.Prefix) (string, error) {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	routes, err := s.h.RouteListFiltered(family, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		if r.Gw != nil {
			return r.Gw.String(), nil
		}
	}
	return "", nil
}

func (s *routeSampler) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// checkMoved fails t unless, after since, the router's route for every
// VIP came to member i and then never pointed anywhere else: once the new
// holder's route is in, a member that is not the leader never gets the
// client's traffic. It returns when the route first pointed at i.
func (l *bgpLab) checkMoved(s *routeSampler, since time.Time, i int) time.Time {
	l.t.Helper()
	var moved time.Time
	for _, p := range s.prefixes {
		want := l.hopOf(p.String(), i)
		mustWaitFor(l.t, electionBound, fmt.Sprintf("router's best route for %s via server%d", p, i), func() (bool, string) {
			s.mu.Lock()
			defer s.mu.Unlock()
			cs := s.changes[p]
			return len(cs) > 0 && cs[len(cs)-1].Via == want, fmt.Sprint(cs)
		})
		s.mu.Lock()
		var seen time.Time
		for _, c := range s.changes[p] {
			switch {
			case c.At.Before(since):
			case seen.IsZero() && c.Via == want:
				seen = c.At
			case !seen.IsZero() && c.Via != want:
				l.t.Errorf("%s: after the route came to server%d (%s) at %s, the router's route went via %q at %s",
					p, i, want, seen.Format("15:04:05.000"), c.Via, c.At.Format("15:04:05.000"))
			}
		}
		s.mu.Unlock()
		if seen.After(moved) {
			moved = seen
		}
	}
	return moved
}

// The VIP's routes at the router come from the holder only, and follow
// it through a failing check, a node crash (kill -9 and link down, so
// its route stays until BIRD's hold timer) and a partition, for IPv4 and
// IPv6. A sampler of the router's table checks that the route never goes
// back to another member once the new holder's has arrived; the
// cluster's sampler checks the members. A router address that refuses
// the session is a warning and a metric on every member.
func TestBGP(t *testing.T) {
	l := startBGPLab(t, true, true, nil)
	c := l.c
	client := NewClient(t, l.clientNS)
	h := l.waitSettled(electionBound)
	l.waitClientReaches(client, h)

	t.Run("sessions and the refusing router", func(t *testing.T) {
		l := l.with(t)
		c := l.c
		for _, node := range c.Nodes {
			waitMetricSample(t, node, "keep_vip_announcer_bgp_session_up", func(v float64) bool { return v == 1 }, "peer="+l.routerIP)
			waitMetricSample(t, node, "keep_vip_announcer_bgp_session_up", func(v float64) bool { return v == 1 }, "peer="+l.routerIP6)
			waitMetricSample(t, node, "keep_vip_announcer_bgp_session_up", func(v float64) bool { return v == 0 }, "peer="+l.refuseIP)
			waitMetricSample(t, node, "keep_vip_announcer_bgp_session_errors_total", func(v float64) bool { return v >= 1 }, "peer="+l.refuseIP)
			mustWaitFor(t, metricsBound, node.ID+"'s warning about "+l.refuseIP, func() (bool, string) {
				b, err := os.ReadFile(node.LogPath)
				for _, line := range strings.Split(string(b), "\n") {
					if strings.Contains(line, "bgp session not established") && strings.Contains(line, l.refuseIP) &&
						strings.Contains(line, "connection refused") && strings.Contains(line, `"level":"warn"`) {
						return true, ""
					}
				}
				return false, fmt.Sprint(err)
			})
		}
		out, err := c.Node(h).supervisorCLI("status")
		if err != nil || !regexp.MustCompile(regexp.QuoteMeta(l.routerIP)+`\s+established\s+advertising `+regexp.QuoteMeta(c.Net.VIP()+"/32")).MatchString(out) ||
			!strings.Contains(out, l.refuseIP) {
			t.Errorf("status of the holder lacks its bgp sessions: %v\n%s", err, out)
		}
	})

	rs := l.startRouteSampler()
	start := time.Now()

	t.Run("failing check", func(t *testing.T) {
		l := l.with(t)
		c := l.c
		t0 := time.Now()
		c.Node(h).Health.Stop()
		next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != h })
		l.checkMoved(rs, t0, next)
		l.waitOnlyRoute(next)
		l.waitClientReaches(client, next)
		c.Node(h).Health.Start()
		h = next
	})

	t.Run("node crash", func(t *testing.T) {
		l := l.with(t)
		c := l.c
		time.Sleep(time.Second)
		t0 := time.Now()
		dead := c.Node(h)
		failoverLoseNode(t, c.Net, dead.NS, c.Bins.Dir, nil)
		_, _ = runIP("-n", dead.NS, "addr", "del", l.vip6+"/128", "dev", nodeIfName)
		next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != h })
		moved := l.checkMoved(rs, t0, next)
		// The dead member could not withdraw: its route is still at the
		// router (until the hold timer), and the new one won on MED.
		hops, err := l.birdRoutes(c.Net.VIP() + "/32")
		t.Logf("route moved %s after the crash; router's routes then: %v %v", moved.Sub(t0).Round(time.Millisecond), hops, err)
		if !slices.Contains(hops, dead.IP) || len(hops) == 0 || hops[0] != c.Net.NodeIP(next) {
			t.Errorf("want the new holder's route best while the dead one's waits for the hold timer (%s), router has %v",
				bgpHoldTimer, hops)
		}
		l.waitClientReaches(client, next)
		l.waitOnlyRoute(next) // the hold timer expired
		setNSLink(t, dead.NS, "up")
		l.routeToClient(dead.Index)
		restartSupervisor(dead)
		// Back in the router's table of sessions within seconds: BIRD's
		// error wait time is short (see startBIRD).
		waitMetricSample(t, dead, "keep_vip_announcer_bgp_session_up", func(v float64) bool { return v == 1 }, "peer="+l.routerIP)
		h = next
	})

	// The partition experiments of partition_test.go (there, what the
	// members do is asserted; here, that the route follows): the
	// partitions are between members, each keeps its session with the
	// router.
	p := NewPartitioner(t, c.Net)
	t.Run("partition: leader cut from both followers", func(t *testing.T) {
		l := l.with(t)
		c := l.c
		t.Cleanup(p.healQuietly)
		t0 := time.Now()
		p.Isolate(h)
		next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != h })
		l.checkMoved(rs, t0, next)
		// The isolated member steps down and withdraws.
		l.waitOnlyRoute(next)
		l.waitClientReaches(client, next)
		p.HealAll()
		h = l.waitSettled(partHealBound)
	})
	t.Run("partition: full", func(t *testing.T) {
		l := l.with(t)
		t.Cleanup(p.healQuietly)
		for i := 1; i <= 3; i++ {
			p.Isolate(i)
		}
		// No leader, so no route: the router sends the VIP's traffic
		// nowhere rather than to a member that may not hold it.
		for _, pfx := range l.prefixes() {
			mustWaitFor(t, partMoveBound+partHealBound, "no route for "+pfx, func() (bool, string) {
				hops, err := l.birdRoutes(pfx)
				return err == nil && len(hops) == 0, fmt.Sprint(hops, err)
			})
		}
		p.HealAll()
		h = l.waitSettled(partHealBound)
	})
	for _, tc := range []struct {
		name string
		cut  func(leader int, f []int)
	}{
		{"leader cut from one follower", func(leader int, f []int) { p.Cut(leader, f[0]) }},
		{"followers cut", func(_ int, f []int) { p.Cut(f[0], f[1]) }},
		{"followers cut and leader cut from one", func(leader int, f []int) { p.Cut(f[0], f[1]); p.Cut(leader, f[1]) }},
	} {
		t.Run("partition: "+tc.name, func(t *testing.T) {
			l := l.with(t)
			c := l.c
			t.Cleanup(p.healQuietly)
			tc.cut(h, others(c, h))
			time.Sleep(partObserve)
			p.HealAll()
			h = l.waitSettled(partHealBound)
			l.waitClientReaches(client, h)
		})
	}

	// Over the whole test: the route never pointed at a member other
	// than the holder once the holder's route had reached the router.
	l.checkRouteFollowsHolder(rs, start)

	rs.mu.Lock()
	t.Logf("router route sampler: %d read errors %s; changes: %v", rs.errs, rs.lastErr, rs.changes)
	rs.mu.Unlock()
	if rs.errs > 0 {
		t.Errorf("the router's table could not be read %d times: %s", rs.errs, rs.lastErr)
	}
}

// TestBenchBGP is the BGP failover benchmark (KEEPVIP_BENCH=1, make
// bench): TestBenchFailover's trials, node lost (kill -9 and link down)
// and check fails, on 3 members with the product's default timings
// advertising the VIP to BIRD, and the client behind the router, so the
// outage it sees includes the route's move at the router. The dead
// holder's route stays at the router until the hold timer (9s); the new
// holder's wins on MED as soon as it arrives.
func TestBenchBGP(t *testing.T) {
	trials, _ := benchKnobs(t)
	l := startBGPLab(t, false, false, failoverRender("", failoverCheckInterval, ""))
	sys := &bgpFailover{keepVIPFailover: &keepVIPFailover{t: t, c: l.c, service: l.services}, lab: l}
	l.waitSettled(electionBound)
	rs := l.startRouteSampler()
	start := time.Now()
	name := "keep-vip BGP to BIRD 2, defaults (heartbeat 300ms, hold 9s)"
	r := runTrials(t, sys, name, trialPlan{nodeLost: trials, checkFail: trials, phase: failoverCheckInterval})
	r.key = "keepvip-bgp"
	t.Logf("%s: %d trials of each in %s", name, trials, time.Since(start).Round(time.Second))
	rs.halt()
	rs.mu.Lock()
	moves := len(rs.changes[rs.prefixes[0]])
	rs.mu.Unlock()
	t.Logf("router's route changed %d times (the sampler reads its kernel table every %s)", moves, samplerInterval)
	printFailoverTable(t, []failoverResult{r})
	t.Logf("members' VIP timeline: %s", l.c.Sampler.Stop().describeTimeline())
}

// bgpFailover is keep-vip's failover system with the client behind the
// router.
type bgpFailover struct {
	*keepVIPFailover
	lab *bgpLab
}

func (b *bgpFailover) net() *Net {
	n := *b.lab.c.Net
	n.ClientNS = b.lab.clientNS
	return &n
}

// restoreNode also waits for the restarted member's session: the router
// still has the dead one's until its hold timer, and a member that leads
// before its session is up is not reachable.
func (b *bgpFailover) restoreNode(i int) {
	b.keepVIPFailover.restoreNodeLink(i)
	b.lab.routeToClient(i)
	b.keepVIPFailover.restoreNode(i)
	node := b.lab.c.Node(i)
	// Up to the hold timer, a connect retry and a start.
	mustWaitFor(b.t, electionBound, node.ID+"'s session with the router", func() (bool, string) {
		body, err := node.Metrics()
		if err != nil {
			return false, err.Error()
		}
		v, ok := metricSample(body, "keep_vip_announcer_bgp_session_up", "peer="+b.lab.routerIP)
		return ok && v == 1, fmt.Sprintf("found=%v value=%g", ok, v)
	})
}

// checkRouteFollowsHolder fails t if, at any route sample since from, the
// router's route pointed at a member other than the one holding the VIP
// (the cluster's sampler) although that holder's route had already been
// at the router since it took the VIP. Before the new holder's route
// arrives the old one may still be best (a crashed holder's), after it
// never.
func (l *bgpLab) checkRouteFollowsHolder(s *routeSampler, from time.Time) {
	l.t.Helper()
	holders := l.c.Sampler.TimelineSince(from)
	holderAt := func(at time.Time) (int, time.Time) {
		h, since := 0, time.Time{}
		for _, ch := range holders {
			if ch.At.After(at) {
				break
			}
			h, since = 0, ch.At
			if len(ch.Holders) == 1 {
				h = ch.Holders[0]
			}
		}
		return h, since
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.prefixes {
		seen := map[int]time.Time{} // member → last time the route came to it
		for _, c := range s.changes[p] {
			if c.At.Before(from) || c.Via == "" {
				continue
			}
			via := 0
			for i := 1; i <= 3; i++ {
				if l.hopOf(p.String(), i) == c.Via {
					via = i
				}
			}
			h, since := holderAt(c.At)
			if via != 0 && h != 0 && via != h && seen[h].After(since) {
				l.t.Errorf("%s: at %s the router's route went to server%d while server%d held the VIP (since %s) and its route had reached the router at %s",
					p, c.At.Format("15:04:05.000"), via, h, since.Format("15:04:05.000"), seen[h].Format("15:04:05.000"))
			}
			seen[via] = c.At
		}
	}
}

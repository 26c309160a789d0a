package balancer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/proxy"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func udpLB(name, bind string, backends ...string) *pb.LoadBalancer {
	return typed(lb(name, bind, backends...), TypeUDP)
}

// udpClient is a connected socket: it only accepts datagrams from the
// address it sent to, as most udp clients do.
type udpClient struct {
	t   *testing.T
	c   *net.UDPConn
	buf []byte
}

func dialUDP(t *testing.T, address string) *udpClient {
	t.Helper()
	c, err := net.Dial("udp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{t: t, c: c.(*net.UDPConn), buf: make([]byte, 2048)}
}

func (u *udpClient) ask(msg string) string {
	u.t.Helper()
	u.c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := u.c.Write([]byte(msg)); err != nil {
		u.t.Fatal(err)
	}
	n, err := u.c.Read(u.buf)
	if err != nil {
		u.t.Fatalf("answer to %q: %v", msg, err)
	}
	return string(u.buf[:n])
}

func TestUDPSessions(t *testing.T) {
	b := newBalancer(t)
	a1, _ := startUDPEcho(t, "b1")
	a2, _ := startUDPEcho(t, "b2")
	configure(t, b, named(udpLB("dns", "127.0.0.1:0", a1, a2), "b1", "b2"))
	front := addr(t, b, "dns")

	x, y := dialUDP(t, front), dialUDP(t, front)
	// Round robin per session: x gets b1, y b2, and each keeps its backend
	// and gets its own replies.
	for i := range 3 {
		if got := x.ask("x"); got != "b1 x" {
			t.Fatalf("client x, datagram %d: %q", i, got)
		}
		if got := y.ask("y"); got != "b2 y" {
			t.Fatalf("client y, datagram %d: %q", i, got)
		}
	}
	if n := testutil.ToFloat64(b.m.Active.WithLabelValues("dns")); n != 2 {
		t.Errorf("%s = %v, want 2 sessions", policy.MetricActiveConnections, n)
	}
	if n := testutil.ToFloat64(b.m.Connections.WithLabelValues("dns", "b1")); n != 1 {
		t.Errorf("%s{b1} = %v, want 1 session", policy.MetricConnections, n)
	}
	if n := testutil.ToFloat64(b.m.Bytes.WithLabelValues("dns", "b1", policy.DirToBackend)); n != 3 {
		t.Errorf("bytes to b1 = %v, want 3", n)
	}
	if n := testutil.ToFloat64(b.m.Bytes.WithLabelValues("dns", "b1", policy.DirToClient)); n != float64(3*len("b1 x")) {
		t.Errorf("bytes from b1 = %v, want %d", n, 3*len("b1 x"))
	}
}

// TestUDPSeveralRepliesPerDatagram: a backend may answer one datagram with
// several (a burst queued on the session's socket at once); every one
// reaches the client, in order, without the client sending again.
func TestUDPSeveralRepliesPerDatagram(t *testing.T) {
	const replies = 20
	backend := startUDPServer(t, func(pc *net.UDPConn, p []byte, from netip.AddrPort) {
		for i := range replies {
			pc.WriteToUDPAddrPort(fmt.Appendf(nil, "%s %d", p, i), from)
		}
	})
	b := newBalancer(t)
	configure(t, b, named(udpLB("burst", "127.0.0.1:0", backend), "b1"))
	c := dialUDP(t, addr(t, b, "burst"))
	if got, want := c.ask("q"), "q 0"; got != want {
		t.Fatalf("first reply %q, want %q", got, want)
	}
	for i := 1; i < replies; i++ {
		c.c.SetReadDeadline(time.Now().Add(waitFor))
		n, err := c.c.Read(c.buf)
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i+1, replies, err)
		}
		if got, want := string(c.buf[:n]), fmt.Sprintf("q %d", i); got != want {
			t.Fatalf("reply %d: %q, want %q", i+1, got, want)
		}
	}
}

// TestUDPClientsSpreadOverLoops: with several event loops, each serves the
// clients the kernel hashes to its socket; a client's datagrams all reach
// one session, and every client gets its own replies.
func TestUDPClientsSpreadOverLoops(t *testing.T) {
	const clients = 32
	b := newBalancer(t)
	b.SetLoops(4)
	a1, _ := startUDPEcho(t, "b1")
	configure(t, b, named(udpLB("dns", "127.0.0.1:0", a1), "b1"))
	front := addr(t, b, "dns")
	for i := range clients {
		c := dialUDP(t, front)
		for j := range 3 {
			msg := fmt.Sprintf("client %d datagram %d", i, j)
			if got := c.ask(msg); got != "b1 "+msg {
				t.Fatalf("%s: answer %q", msg, got)
			}
		}
	}
	var srv *proxy.UDPServer
	b.mu.Lock()
	for _, fe := range b.frontends {
		srv, _ = fe.srv.(*proxy.UDPServer)
	}
	b.mu.Unlock()
	if srv == nil {
		t.Fatal("no udp server")
	}
	perShard := srv.SessionsPerShard()
	if len(perShard) != 4 {
		t.Fatalf("udp server with 4 shards expected, got %d", len(perShard))
	}
	busy, sessions := 0, 0
	for _, n := range perShard {
		sessions += n
		if n > 0 {
			busy++
		}
	}
	// A client whose datagrams reached two loops would have two sessions.
	if sessions != clients {
		t.Errorf("%d sessions for %d clients", sessions, clients)
	}
	// 32 clients all hashed to one of 4 sockets: odds of 4 in 4^32.
	if busy < 2 {
		t.Errorf("clients on %d of 4 loops, want them spread", busy)
	}
}

// TestUDPPortInUseRefused: a udp port someone else holds is refused with
// the kernel's reason, even when the holder allows port sharing
// (SO_REUSEPORT): the balancer's group of sockets never quietly joins it.
func TestUDPPortInUseRefused(t *testing.T) {
	for _, share := range []bool{false, true} {
		t.Run(fmt.Sprintf("holder shares %v", share), func(t *testing.T) {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				if !share {
					return nil
				}
				var serr error
				c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
				return serr
			}}
			held, err := lc.ListenPacket(context.Background(), "udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { held.Close() })
			b := newBalancer(t)
			b.SetLoops(2)
			err = b.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{
				named(udpLB("dns", held.LocalAddr().String(), "127.0.0.1:9"), "b1")}})
			if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), held.LocalAddr().String()) {
				t.Fatalf("Configure on a held port: %v, want address already in use naming %s", err, held.LocalAddr())
			}
		})
	}
}

func TestUDPIdleExpiry(t *testing.T) {
	b := newBalancer(t)
	a1, _ := startUDPEcho(t, "b1")
	a2, _ := startUDPEcho(t, "b2")
	l := named(udpLB("dns", "127.0.0.1:0", a1, a2), "b1", "b2")
	l.IdleTimeoutMs = 150
	configure(t, b, l)
	c := dialUDP(t, addr(t, b, "dns"))
	if got := c.ask("1"); got != "b1 1" {
		t.Fatalf("first answer %q", got)
	}
	eventually(t, "session expired", func() bool { return testutil.ToFloat64(b.m.Active.WithLabelValues("dns")) == 0 })
	// A new session, so round robin moves on.
	if got := c.ask("2"); got != "b2 2" {
		t.Errorf("answer after expiry %q, want b2's", got)
	}
}

// Bound to 0.0.0.0, the balancer answers from the address the client wrote
// to, not the route's preferred one: a connected client would drop the
// reply otherwise.
func TestUDPWildcardRepliesFromClientsDestination(t *testing.T) {
	b := newBalancer(t)
	a1, _ := startUDPEcho(t, "b1")
	configure(t, b, named(udpLB("dns", "0.0.0.0:0", a1), "b1"))
	_, port, _ := net.SplitHostPort(addr(t, b, "dns"))
	// 127.0.0.2 is on lo too; the reply would leave from 127.0.0.1.
	c := dialUDP(t, net.JoinHostPort("127.0.0.2", port))
	if got := c.ask("hi"); got != "b1 hi" {
		t.Errorf("answer %q", got)
	}
	// The socket is dual-stack: an IPv6 client is served too.
	if ln, err := net.ListenPacket("udp6", "[::1]:0"); err == nil {
		ln.Close()
		c6 := dialUDP(t, net.JoinHostPort("::1", port))
		if got := c6.ask("hi6"); got != "b1 hi6" {
			t.Errorf("IPv6 client: answer %q", got)
		}
	}
}

// TestUDPReloadKeepsSessions: a reload that changes a udp load balancer's
// backends keeps its sockets (every loop's) and its clients' sessions; the
// new backend list applies to new clients.
func TestUDPReloadKeepsSessions(t *testing.T) {
	b := newBalancer(t)
	b.SetLoops(2)
	a1, _ := startUDPEcho(t, "b1")
	a2, _ := startUDPEcho(t, "b2")
	configure(t, b, named(udpLB("dns", "127.0.0.1:0", a1), "b1"))
	front := addr(t, b, "dns")
	var old []*udpClient
	for i := range 8 {
		c := dialUDP(t, front)
		if got := c.ask(fmt.Sprint(i)); got != fmt.Sprintf("b1 %d", i) {
			t.Fatalf("before the reload: %q", got)
		}
		old = append(old, c)
	}
	configure(t, b, named(udpLB("dns", "127.0.0.1:0", a2), "b2"))
	if got := addr(t, b, "dns"); got != front {
		t.Fatalf("reload moved the load balancer from %s to %s", front, got)
	}
	for i, c := range old {
		if got := c.ask("again"); got != "b1 again" {
			t.Errorf("client %d after the reload: %q, want its session to b1 kept", i, got)
		}
	}
	if got := dialUDP(t, front).ask("new"); got != "b2 new" {
		t.Errorf("new client after the reload: %q, want b2", got)
	}
}

func TestUDPRefusedBackendEjected(t *testing.T) {
	b := newBalancer(t)
	dead := deadUDPAddr(t)
	a2, _ := startUDPEcho(t, "b2")
	l := named(udpLB("dns", "127.0.0.1:0", dead, a2), "dead", "b2")
	l.Health = &pb.BackendHealth{EjectAfterErrors: 2}
	configure(t, b, l)
	front := addr(t, b, "dns")
	// Sessions of new clients alternate; those on the dead port lose their
	// datagram and the ICMP refusals eject it after two, although b2's
	// answers come in between.
	for i := 0; testutil.ToFloat64(b.m.Up.WithLabelValues("dns", "dead")) == 1; i++ {
		if i == 20 {
			t.Fatal("dead backend not ejected after 20 clients")
		}
		c := dialUDP(t, front)
		c.c.Write([]byte("x"))
		c.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.c.Read(c.buf)
	}
	for range 4 {
		if got := dialUDP(t, front).ask("again"); got != "b2 again" {
			t.Errorf("answer %q", got)
		}
	}
}

func deadUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := pc.LocalAddr().String()
	pc.Close()
	return a
}

// A removed udp load balancer takes no new client but its sessions go on
// until the drain ends.
func TestUDPDrain(t *testing.T) {
	b := newBalancer(t)
	a1, _ := startUDPEcho(t, "b1")
	configureDrain(t, b, time.Minute, named(udpLB("dns", "127.0.0.1:0", a1), "b1"))
	front := addr(t, b, "dns")
	old := dialUDP(t, front)
	old.ask("hi")
	configureDrain(t, b, 500*time.Millisecond)
	if got := old.ask("still"); got != "b1 still" {
		t.Errorf("session after removal: %q", got)
	}
	fresh := dialUDP(t, front)
	fresh.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	fresh.c.Write([]byte("new"))
	if n, err := fresh.c.Read(fresh.buf); err == nil {
		t.Errorf("a new client of a removed load balancer got %q", fresh.buf[:n])
	}
	eventually(t, "drained", func() bool {
		st, _ := b.Status(context.Background())
		return st.State == StateIdle
	})
	old.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	old.c.Write([]byte("after"))
	if n, err := old.c.Read(old.buf); err == nil {
		t.Errorf("a session past the drain timeout got %q", old.buf[:n])
	}
}

// The forwarding path allocates nothing per datagram once the session is
// open: one round trip is two reads and two writes on each side.
func TestUDPNoAllocsPerDatagram(t *testing.T) {
	b := newBalancer(t)
	a1, _ := startUDPEcho(t, "b1")
	configure(t, b, named(udpLB("dns", "127.0.0.1:0", a1), "b1"))
	c := dialUDP(t, addr(t, b, "dns"))
	msg := []byte("ping")
	c.ask("warm up")
	c.c.SetReadDeadline(time.Now().Add(waitFor))
	allocs := testing.AllocsPerRun(500, func() {
		c.c.Write(msg)
		c.c.Read(c.buf)
	})
	// The figure counts every goroutine of the process (client, echo
	// backend, balancer); a stray runtime allocation is tolerated.
	if allocs >= 1 {
		t.Errorf("%.2f allocations per datagram round trip, want 0", allocs)
	}
}

func BenchmarkUDPRoundTrip(b *testing.B) {
	bal := New(zerolog.Nop())
	defer bal.Close()
	backend := startUDPServer(b, func(pc *net.UDPConn, p []byte, from netip.AddrPort) { pc.WriteToUDPAddrPort(p, from) })
	if err := bal.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{udpLB("dns", "127.0.0.1:0", backend)}}); err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("udp", bal.Addrs()["dns"].String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, buf := []byte(strings.Repeat("x", 64)), make([]byte, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Write(msg)
		c.Read(buf)
	}
}

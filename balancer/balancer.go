// Package balancer runs keep-vip's built-in load balancers: tcp (byte
// streams), udp (per-client sessions) and http (an HTTP/1.x reverse proxy
// with keep-alive pools), with round robin, least connections or source
// hashing over weighted backends, active and passive health, the PROXY
// protocol towards backends, reloads that keep sockets and connections,
// and draining on stop. It is the library behind the balancer plugin and
// knows nothing of the config file. Linux only: the data paths run on
// epoll event loops with raw non-blocking syscalls, as HAProxy and nginx
// do.
//
// By layer, each knowing nothing of those above it (TestLayers holds it):
//   - internal/reactor: the I/O engine (epoll loops, listeners, frontends'
//     sockets, the io_uring send ring, splice pipes); internal/httpwire:
//     HTTP/1.x heads and body framing, pure; internal/proxyheader: PROXY
//     protocol headers;
//   - internal/policy: the balancing policy: validated load balancers,
//     the choice of a backend, active checks and passive ejection, local
//     faults, metrics;
//   - internal/proxy: the tcp, udp and http data paths, one server type
//     each;
//   - this package: the public API: the set of load balancers, their
//     sockets and their reconfiguration (balancer.go, limits.go).
package balancer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/proxy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// States reported by Status.
const (
	StateIdle    = "idle"
	StateServing = "serving"
	// StateDraining: nothing is configured, but connections of removed load
	// balancers are still open.
	StateDraining = "draining"
	StateClosed   = "closed"
)

// ErrClosed is returned by Configure once the Balancer is closed.
var ErrClosed = errors.New("balancer closed")

var _ rpc.Balancer = (*Balancer)(nil)

// Balancer implements rpc.Balancer.
type Balancer struct {
	log zerolog.Logger
	reg *prometheus.Registry
	// judge picks backends and keeps their health, for every load
	// balancer; m is its metrics.
	judge *policy.Judge
	m     *policy.Metrics

	// ctx ends on Close, after draining, and stops the health checks.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts servers, serving or draining, for Close to wait.
	wg sync.WaitGroup
	// loops are the event loops tcp and http servers run on, started by
	// the first Configure: nLoops of them, or one per CPU Go may use.
	loops  *reactor.Group
	nLoops int

	// mu serializes Configure, Status and Close.
	mu           sync.Mutex
	frontends    map[string]*frontend // by frontendKey
	drainTimeout time.Duration
	draining     map[proxy.Server]bool
	closed       bool
}

// frontend is one listening socket and the server on it. The socket
// outlives configs that keep its family and bind address; the server is
// replaced when the type changes (tcp and http hand the socket over), and
// its load balancer is swapped in place otherwise.
type frontend struct {
	sock *reactor.Socket
	srv  proxy.Server
}

func (fe *frontend) addr() net.Addr { return fe.sock.Addr }

// frontendKey says which configured load balancers share a socket across
// Configure calls: those of the same socket family and bind address. Port 0
// asks for a fresh port each time, so there the name tells them apart too.
func frontendKey(lb *policy.LoadBalancer) string {
	if _, port, _ := net.SplitHostPort(lb.Bind); port == "0" {
		return policy.Network(lb.Type) + " " + lb.Bind + " " + lb.Name
	}
	return policy.Network(lb.Type) + " " + lb.Bind
}

// New returns a Balancer that serves nothing until Configure.
func New(log zerolog.Logger) *Balancer {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	judge := policy.NewJudge(ctx, log, reg)
	return &Balancer{
		log:       log,
		reg:       reg,
		judge:     judge,
		m:         judge.Metrics,
		ctx:       ctx,
		cancel:    cancel,
		frontends: map[string]*frontend{},
		draining:  map[proxy.Server]bool{},
	}
}

// SetLoops sets how many event loops the balancer runs, before its first
// Configure; by default one per processor Go may use.
func (b *Balancer) SetLoops(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nLoops = n
}

// Configure replaces the running load balancers with cfg's. A load balancer
// whose socket family and bind address are unchanged keeps its socket: its
// name, backends and settings are swapped in place, or, when its type
// changes between tcp and http, a new server takes the socket over. Removed
// ones stop accepting while their established connections drain for up to
// cfg's drain timeout; new ones start. Backends that keep their address keep
// their health state. If cfg is invalid or any new socket cannot be bound,
// nothing changes.
// Validate is the Validate RPC: cfg checked as Configure would, with no
// socket opened.
func (b *Balancer) Validate(_ context.Context, cfg *pb.BalancerConfig) error {
	_, err := policy.Validate(cfg)
	return err
}

func (b *Balancer) Configure(ctx context.Context, cfg *pb.BalancerConfig) error {
	lbs, err := policy.Validate(cfg)
	if err != nil {
		return fmt.Errorf("configure balancer: %w", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.loops == nil {
		if b.loops, err = reactor.NewGroup(b.nLoops); err != nil {
			return fmt.Errorf("configure balancer: start event loops: %w", err)
		}
		if err := b.loops.Loops[0].RingErr; err != nil {
			b.log.Warn().Err(err).Msg("io_uring unavailable: each small write is a sendto of its own (slower tcp forwarding, nothing else changes)")
		}
	}

	next := make(map[string]*frontend, len(lbs))
	var opened []*frontend
	for _, lb := range lbs {
		key := frontendKey(lb)
		if fe, ok := b.frontends[key]; ok {
			next[key] = fe
			continue
		}
		fe, err := listen(ctx, lb, len(b.loops.Loops))
		if err != nil {
			for _, fe := range opened {
				fe.close()
			}
			return fmt.Errorf("configure balancer: load balancer %q: listen on %s %s: %w", lb.Name, policy.Network(lb.Type), lb.Bind, err)
		}
		opened = append(opened, fe)
		next[key] = fe
	}

	// Past here nothing can fail: commit.
	b.drainTimeout = time.Duration(cfg.GetDrainTimeoutMs()) * time.Millisecond
	for key, fe := range b.frontends {
		if _, ok := next[key]; !ok {
			lb := fe.srv.Current()
			b.log.Info().Str("balancer", lb.Name).Str("bind", fe.addr().String()).Dur("drain", b.drainTimeout).Msg("load balancer removed")
			b.retire(fe.srv, fe)
			b.forgetRemoved(lb, nil)
		}
	}
	for _, lb := range lbs {
		fe := next[frontendKey(lb)]
		lb.Clients = b.m.Active.WithLabelValues(lb.Name)
		lb.OwnAnswers = b.m.ForNone(lb.Name)
		for _, be := range lb.Backends {
			be.Metrics = b.m.ForBackend(lb.Name, be.Name)
		}
		var old *policy.LoadBalancer
		if fe.srv != nil {
			old = fe.srv.Current()
		}
		if old != nil && old.Type == lb.Type {
			lb.Adopt(old)
		} else {
			lb.Adopt(nil)
		}
		b.judge.StartHealth(lb)
		switch {
		case fe.srv != nil && fe.srv.Compatible(lb):
			fe.srv.Update(lb)
			b.forgetRemoved(old, lb)
			go old.StopHealth()
			b.log.Debug().Str("balancer", lb.Name).Str("bind", fe.addr().String()).Msg("load balancer updated")
		case fe.srv != nil:
			// Same socket, new server: the old one stops accepting and
			// drains, the new one accepts from the same backlog.
			b.retire(fe.srv, nil)
			b.forgetRemoved(old, lb)
			fe.srv = b.newServer(fe, lb)
			b.log.Info().Str("balancer", lb.Name).Str("bind", fe.addr().String()).Str("type", lb.Type).
				Str("was", old.Type).Msg("load balancer restarted on its socket")
		default:
			fe.srv = b.newServer(fe, lb)
			b.log.Info().Str("balancer", lb.Name).Str("type", lb.Type).Str("bind", fe.addr().String()).
				Str("algorithm", lb.Algorithm).Int("backends", len(lb.Backends)).Msg("load balancer listening")
		}
	}
	b.frontends = next
	return nil
}

// listen opens lb's socket. As Go does, a wildcard bind address (0.0.0.0,
// "::" or none) listens on IPv4 and IPv6 alike, so a load balancer serves
// IPv4 and IPv6 VIPs. A udp load balancer gets a socket per event loop.
func listen(ctx context.Context, lb *policy.LoadBalancer, loops int) (*frontend, error) {
	var sock *reactor.Socket
	var err error
	if lb.Type == TypeUDP {
		sock, err = reactor.OpenUDPGroup(ctx, lb.Bind, loops)
	} else {
		sock, err = reactor.OpenSocket(ctx, "tcp", lb.Bind)
	}
	if err != nil {
		return nil, err
	}
	return &frontend{sock: sock}, nil
}

// close closes the socket of a frontend that never served.
func (fe *frontend) close() { fe.sock.Close() }

// env is what the servers share, once the loops run.
func (b *Balancer) env() *proxy.Env { return &proxy.Env{Loops: b.loops, Judge: b.judge} }

func (b *Balancer) newServer(fe *frontend, lb *policy.LoadBalancer) proxy.Server {
	b.wg.Add(1)
	switch lb.Type {
	case TypeUDP:
		return proxy.ServeUDP(b.env(), fe.sock, lb)
	case TypeHTTP:
		return proxy.ServeHTTP(b.env(), fe.sock, lb)
	}
	return proxy.ServeTCP(b.env(), fe.sock, lb)
}

// retire stops srv accepting and lets its clients drain in the background
// for up to the drain timeout. With fe, the frontend is gone: its listening
// socket closes at once, so new clients are refused rather than left in a
// backlog no one reads (a udp socket stays open for the sessions' replies
// and closes when they are drained).
func (b *Balancer) retire(srv proxy.Server, fe *frontend) {
	srv.Stop()
	if _, udp := srv.(*proxy.UDPServer); fe != nil && !udp {
		fe.sock.Close()
	}
	deadline := time.Now().Add(b.drainTimeout)
	b.draining[srv] = true
	go func() {
		defer b.wg.Done()
		lb := srv.Current()
		lb.StopHealth()
		srv.Drain(deadline)
		b.mu.Lock()
		delete(b.draining, srv)
		b.mu.Unlock()
		b.log.Debug().Str("balancer", lb.Name).Msg("load balancer drained")
	}()
}

// forgetRemoved drops the gauges of old's backends that next no longer has.
func (b *Balancer) forgetRemoved(old, next *policy.LoadBalancer) {
	if old == nil {
		return
	}
	keep := map[string]bool{}
	if next != nil && next.Name == old.Name {
		for _, be := range next.Backends {
			keep[be.Name] = true
		}
	}
	for _, be := range old.Backends {
		if !keep[be.Name] {
			b.m.Forget(old.Name, be.Name)
		}
	}
}

// Status reports every load balancer's bound address, algorithm, backends
// with their state, and open client connections.
func (b *Balancer) Status(context.Context) (*pb.PluginStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &pb.PluginStatus{State: StateIdle, Details: map[string]string{}}
	switch {
	case b.closed:
		st.State = StateClosed
	case len(b.frontends) > 0:
		st.State = StateServing
	case len(b.draining) > 0:
		st.State = StateDraining
	}
	for _, fe := range b.frontends {
		lb := fe.srv.Current()
		// The bound address, not the configured one, so port 0 shows the
		// port the kernel picked.
		st.Details[lb.Name+" bind"] = lb.Type + " " + fe.addr().String()
		st.Details[lb.Name+" algorithm"] = lb.Algorithm
		if lb.Splice {
			st.Details[lb.Name+" splice"] = "on"
		}
		st.Details[lb.Name+" clients"] = strconv.Itoa(fe.srv.Clients())
		bes := make([]string, 0, len(lb.Backends))
		for _, be := range lb.Backends {
			s := be.Name + "=" + be.Address
			if !be.State.Up.Load() {
				s += " down"
			}
			bes = append(bes, s)
		}
		if len(bes) == 0 {
			bes = append(bes, "none")
		}
		st.Details[lb.Name+" backends"] = strings.Join(bes, ", ")
	}
	st.Balancer = &pb.BalancerStatus{Draining: len(b.draining) > 0}
	if n := 0; len(b.draining) > 0 {
		for srv := range b.draining {
			n += srv.Clients()
		}
		st.Details["draining clients"] = strconv.Itoa(n)
		st.Balancer.DrainingClients = int64(n)
	}
	return st, nil
}

// Addrs returns the bound address of every load balancer by name; it is
// mostly useful when a bind address asks for port 0.
func (b *Balancer) Addrs() map[string]net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]net.Addr, len(b.frontends))
	for _, fe := range b.frontends {
		out[fe.srv.Current().Name] = fe.addr()
	}
	return out
}

// Gather returns the balancer's own metrics.
func (b *Balancer) Gather() ([]*dto.MetricFamily, error) { return b.reg.Gather() }

// Close stops every listener, lets open connections drain for up to the
// drain timeout of the last config, cuts those left and waits for them. It
// is safe to call twice.
func (b *Balancer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, fe := range b.frontends {
		b.retire(fe.srv, fe)
	}
	b.frontends = map[string]*frontend{}
	b.mu.Unlock()

	b.wg.Wait()
	b.cancel()
	if b.loops != nil {
		b.loops.Stop()
	}
	return nil
}

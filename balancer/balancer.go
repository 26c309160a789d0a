// Package balancer runs keep-vip's built-in layer-4 load balancers: each one
// listens on its bind address and proxies every client connection to one of
// its backends, picked round-robin. It is the library behind the balancer
// plugin and knows nothing of the config file.
package balancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// TypeTCP is the only load balancer type built in so far.
const TypeTCP = "tcp"

// DefaultDialTimeout bounds the connect to one backend. A backend that does
// not answer within it is skipped for the next one.
const DefaultDialTimeout = 2 * time.Second

// States reported by Status.
const (
	StateIdle    = "idle"
	StateServing = "serving"
	StateClosed  = "closed"
)

// ErrClosed is returned by Configure once the Balancer is closed.
var ErrClosed = errors.New("balancer closed")

var _ rpc.Balancer = (*Balancer)(nil)

// Balancer implements rpc.Balancer.
type Balancer struct {
	log         zerolog.Logger
	reg         *prometheus.Registry
	m           *metrics
	dialTimeout time.Duration

	// ctx ends on Close and cancels backend connects in flight.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts accept loops and proxied connections, for Close to wait.
	wg sync.WaitGroup

	// mu serializes Configure, Status and Close.
	mu        sync.Mutex
	frontends map[string]*frontend // by frontendKey
	closed    bool

	// connsMu guards conns, every open client and backend connection, so
	// Close can cut them. Connections are not tied to their frontend: a
	// removed load balancer stops accepting but its connections go on.
	connsMu     sync.Mutex
	conns       map[*net.TCPConn]struct{}
	connsClosed bool
}

// frontend is one listening socket and what it serves. The socket outlives
// configs that keep its type and bind address; its load balancer (name and
// backends) is swapped atomically under it.
type frontend struct {
	ln   *net.TCPListener
	lb   atomic.Pointer[loadBalancer]
	next atomic.Uint64 // round-robin position, kept across backend swaps
}

// loadBalancer is one validated pb.LoadBalancer. It is never modified once
// stored in a frontend.
type loadBalancer struct {
	name     string
	bind     string
	typ      string
	backends []*backend
}

type backend struct {
	name    string
	address string
	// failing remembers the last connect failed, so the log shows a
	// backend going down and coming back rather than every failed connect.
	failing atomic.Bool
}

// frontendKey says which configured load balancers share a socket across
// Configure calls: those of the same type and bind address. Port 0 asks for
// a fresh port each time, so there the name tells them apart as well.
func frontendKey(lb *loadBalancer) string {
	if _, port, _ := net.SplitHostPort(lb.bind); port == "0" {
		return lb.typ + " " + lb.bind + " " + lb.name
	}
	return lb.typ + " " + lb.bind
}

// New returns a Balancer that serves nothing until Configure.
func New(log zerolog.Logger) *Balancer {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	return &Balancer{
		log:         log,
		reg:         reg,
		m:           newMetrics(reg),
		dialTimeout: DefaultDialTimeout,
		ctx:         ctx,
		cancel:      cancel,
		frontends:   map[string]*frontend{},
		conns:       map[*net.TCPConn]struct{}{},
	}
}

// Configure replaces the running load balancers with cfg's. A load balancer
// whose type and bind address are unchanged keeps its socket, and its name
// and backends are swapped in place; removed ones stop listening while their
// established connections go on; new ones start. If cfg is invalid or any
// new socket cannot be bound, nothing changes.
func (b *Balancer) Configure(ctx context.Context, cfg *pb.BalancerConfig) error {
	lbs, err := validate(cfg)
	if err != nil {
		return fmt.Errorf("configure balancer: %w", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}

	next := make(map[string]*frontend, len(lbs))
	var opened []*frontend
	var lc net.ListenConfig
	for _, lb := range lbs {
		key := frontendKey(lb)
		if fe, ok := b.frontends[key]; ok {
			next[key] = fe
			continue
		}
		ln, err := lc.Listen(ctx, "tcp", lb.bind)
		if err != nil {
			for _, fe := range opened {
				fe.ln.Close()
			}
			return fmt.Errorf("configure balancer: load balancer %q: listen on %s: %w", lb.name, lb.bind, err)
		}
		fe := &frontend{ln: ln.(*net.TCPListener)}
		opened = append(opened, fe)
		next[key] = fe
	}

	// Past here nothing can fail: commit.
	for key, fe := range b.frontends {
		if _, ok := next[key]; !ok {
			fe.ln.Close()
			b.log.Info().Str("balancer", fe.lb.Load().name).Str("bind", fe.lb.Load().bind).Msg("load balancer removed")
		}
	}
	for _, lb := range lbs {
		next[frontendKey(lb)].lb.Store(lb)
	}
	for _, fe := range opened {
		lb := fe.lb.Load()
		b.log.Info().Str("balancer", lb.name).Str("bind", fe.ln.Addr().String()).
			Int("backends", len(lb.backends)).Msg("load balancer listening")
		b.wg.Add(1)
		go b.serve(fe)
	}
	b.frontends = next
	return nil
}

// validate checks cfg as a whole before anything is bound.
func validate(cfg *pb.BalancerConfig) ([]*loadBalancer, error) {
	names := map[string]bool{}
	binds := map[string]string{}
	lbs := make([]*loadBalancer, 0, len(cfg.GetLoadBalancers()))
	for i, p := range cfg.GetLoadBalancers() {
		name := p.GetName()
		if name == "" {
			return nil, fmt.Errorf("load balancer #%d has no name", i+1)
		}
		if names[name] {
			return nil, fmt.Errorf("load balancer %q is defined twice", name)
		}
		names[name] = true
		if p.GetType() != TypeTCP {
			return nil, fmt.Errorf("load balancer %q: type %s is not supported yet", name, p.GetType())
		}
		_, port, err := net.SplitHostPort(p.GetBindAddress())
		if err != nil {
			return nil, fmt.Errorf("load balancer %q: bind address %q: %w", name, p.GetBindAddress(), err)
		}
		// Port 0 gets a fresh port per socket, so it may be shared.
		if other, ok := binds[p.GetBindAddress()]; ok && port != "0" {
			return nil, fmt.Errorf("load balancers %q and %q both bind %s", other, name, p.GetBindAddress())
		}
		binds[p.GetBindAddress()] = name
		lb := &loadBalancer{name: name, bind: p.GetBindAddress(), typ: p.GetType()}
		for j, pbe := range p.GetBackends() {
			if _, _, err := net.SplitHostPort(pbe.GetAddress()); err != nil {
				return nil, fmt.Errorf("load balancer %q: backend #%d %q: address %q: %w",
					name, j+1, pbe.GetName(), pbe.GetAddress(), err)
			}
			be := &backend{name: pbe.GetName(), address: pbe.GetAddress()}
			if be.name == "" {
				// The name labels metrics; the address is the next best.
				be.name = be.address
			}
			lb.backends = append(lb.backends, be)
		}
		lbs = append(lbs, lb)
	}
	return lbs, nil
}

// serve accepts connections until the frontend's listener is closed.
func (b *Balancer) serve(fe *frontend) {
	defer b.wg.Done()
	var backoff time.Duration
	for {
		c, err := fe.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little and
			// retry, as net/http does, rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			b.log.Error().Err(err).Str("bind", fe.ln.Addr().String()).Dur("retry_in", backoff).Msg("accept")
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if !b.track(c) {
			c.Close()
			continue
		}
		// Add while this loop's own count is held, so it never races
		// Close's Wait.
		b.wg.Add(1)
		go b.proxy(fe, fe.lb.Load(), c)
	}
}

// track registers c for Close to cut; false when Close already ran.
func (b *Balancer) track(c *net.TCPConn) bool {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	if b.connsClosed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Balancer) untrack(c *net.TCPConn) {
	b.connsMu.Lock()
	delete(b.conns, c)
	b.connsMu.Unlock()
	c.Close()
}

// proxy connects client to a backend and copies between them until both
// directions end.
func (b *Balancer) proxy(fe *frontend, lb *loadBalancer, client *net.TCPConn) {
	defer b.wg.Done()
	defer b.untrack(client)
	active := b.m.active.WithLabelValues(lb.name)
	active.Inc()
	defer active.Dec()

	server, be := b.dial(fe, lb)
	if server == nil {
		return
	}
	if !b.track(server) {
		server.Close()
		return
	}
	defer b.untrack(server)
	b.m.connections.WithLabelValues(lb.name, be.name).Inc()
	b.log.Debug().Str("balancer", lb.name).Str("client", client.RemoteAddr().String()).
		Str("backend", be.name).Msg("connection proxied")

	errc := make(chan error, 2)
	go func() { errc <- b.pipe(server, client, lb.name, dirToBackend) }()
	go func() { errc <- b.pipe(client, server, lb.name, dirToClient) }()
	for range 2 {
		if err := <-errc; err != nil {
			// A reset or write failure on one side: the other direction
			// has no one to talk to, so cut both to end it now.
			client.Close()
			server.Close()
		}
	}
}

// dial connects to the backends of lb round-robin, each at most once,
// starting at the frontend's next position. It returns nil when none
// answered.
func (b *Balancer) dial(fe *frontend, lb *loadBalancer) (*net.TCPConn, *backend) {
	n := uint64(len(lb.backends))
	if n == 0 {
		b.log.Warn().Str("balancer", lb.name).Msg("connection dropped: no backends configured")
		return nil, nil
	}
	d := net.Dialer{Timeout: b.dialTimeout}
	start := fe.next.Add(1) - 1
	for i := range n {
		be := lb.backends[(start+i)%n]
		c, err := d.DialContext(b.ctx, "tcp", be.address)
		if err == nil {
			if be.failing.Swap(false) {
				b.log.Info().Str("balancer", lb.name).Str("backend", be.name).Msg("backend connects again")
			}
			return c.(*net.TCPConn), be
		}
		if b.ctx.Err() != nil {
			return nil, nil
		}
		b.m.dialErrors.WithLabelValues(lb.name, be.name).Inc()
		if !be.failing.Swap(true) {
			b.log.Warn().Err(err).Str("balancer", lb.name).Str("backend", be.name).Msg("backend connect failed, trying the next")
		}
	}
	b.log.Warn().Str("balancer", lb.name).Msg("connection dropped: no backend answered")
	return nil, nil
}

// copyChunk is how many bytes one io.CopyN moves before the bytes metric is
// updated. Both ends being *net.TCPConn, each chunk is one splice loop in the
// kernel (io.CopyN's LimitedReader is unwrapped by the splice path), so the
// bytes never pass through user space; the chunk only bounds how stale the
// metric gets on a long transfer.
const copyChunk = 1 << 20

// pipe copies src to dst until src ends, then half-closes dst so the peer
// sees the end while the other direction goes on. It returns nil on a clean
// end of src.
func (b *Balancer) pipe(dst, src *net.TCPConn, lbName, dir string) error {
	bytes := b.m.bytes.WithLabelValues(lbName, dir)
	for {
		n, err := io.CopyN(dst, src, copyChunk)
		bytes.Add(float64(n))
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
				return err
			}
			return nil
		default:
			return err
		}
	}
}

// Status reports every load balancer's bound address and backends.
func (b *Balancer) Status(context.Context) (*pb.PluginStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &pb.PluginStatus{State: StateIdle, Details: map[string]string{}}
	switch {
	case b.closed:
		st.State = StateClosed
	case len(b.frontends) > 0:
		st.State = StateServing
	}
	for _, fe := range b.frontends {
		lb := fe.lb.Load()
		// The bound address, not the configured one, so port 0 shows the
		// port the kernel picked.
		st.Details[lb.name+" bind"] = lb.typ + " " + fe.ln.Addr().String()
		bes := make([]string, 0, len(lb.backends))
		for _, be := range lb.backends {
			bes = append(bes, be.name+"="+be.address)
		}
		if len(bes) == 0 {
			bes = append(bes, "none")
		}
		st.Details[lb.name+" backends"] = strings.Join(bes, ", ")
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
		out[fe.lb.Load().name] = fe.ln.Addr()
	}
	return out
}

// Gather returns the balancer's own metrics.
func (b *Balancer) Gather() ([]*dto.MetricFamily, error) { return b.reg.Gather() }

// Close stops every listener, cuts every open connection and waits for
// them. It is safe to call twice.
func (b *Balancer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, fe := range b.frontends {
		fe.ln.Close()
	}
	b.frontends = map[string]*frontend{}
	b.mu.Unlock()

	b.cancel()
	b.connsMu.Lock()
	b.connsClosed = true
	for c := range b.conns {
		c.Close()
	}
	b.connsMu.Unlock()
	b.wg.Wait()
	return nil
}

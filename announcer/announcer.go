// Package announcer puts keep-vip's VIPs on an interface and tells the
// segment about them with gratuitous ARP, in the manner of MetalLB's layer2
// mode: one small type per concern (addrs for netlink, arpSender for ARP,
// refresher for the repeat) and Announcer tying them to rpc.Announcer.
//
// IPv6 VIPs are added to the interface (/128, no DAD) but not announced:
// the announcer sends no unsolicited neighbour advertisements.
//
// Network namespace: Configure opens the netlink and packet sockets in the
// network namespace of the thread that calls it, and every later call works
// through those sockets, so the announcer stays in that namespace whatever
// thread later calls run on.
package announcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// ErrNotConfigured is returned by Acquire before a successful Configure.
var ErrNotConfigured = errors.New("announcer not configured")

// States reported by Status.
const (
	StateHolding  = "holding"
	StateReleased = "released"
)

// Announcer implements rpc.Announcer. Its methods are safe for concurrent
// use.
type Announcer struct {
	log      zerolog.Logger
	m        *metrics
	garpSent atomic.Uint64

	mu      sync.Mutex
	nl      *netlink.Handle // opened by the first Configure
	cfg     *config         // nil until Configure succeeds, and after Close
	addrs   *addrs
	arp     *arpSender // nil when no VIP is IPv4
	held    bool
	refresh *refresher // non-nil while held
}

var _ rpc.Announcer = (*Announcer)(nil)

// New returns an announcer that holds nothing until configured.
func New(log zerolog.Logger) *Announcer {
	return &Announcer{log: log, m: newMetrics()}
}

// Configure validates cfg, releases what an earlier config held, and takes
// off the interface any of cfg's VIPs that are on it already: they can only
// be left over from a run that died, and a fresh announcer holds nothing.
//
// An invalid cfg changes nothing. A failure after validation leaves the
// announcer unconfigured.
func (a *Announcer) Configure(ctx context.Context, c *pb.AnnouncerConfig) error {
	cfg, err := parseConfig(c)
	if err != nil {
		a.m.failed(opConfigure)
		return fmt.Errorf("configure announcer: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.configure(cfg); err != nil {
		a.m.failed(opConfigure)
		return fmt.Errorf("configure announcer: %w", err)
	}
	return nil
}

func (a *Announcer) configure(cfg config) error {
	if a.nl == nil {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
		a.nl = h
	}
	next := &addrs{h: a.nl, ifname: cfg.ifname}
	ifi, err := next.iface()
	if err != nil {
		return err
	}

	// From here on the old config is gone, whatever happens.
	relErr := a.release()
	a.closeARP()
	a.cfg, a.addrs = nil, nil
	a.m.vipHeld.Reset()
	if relErr != nil {
		return relErr
	}

	for _, vip := range cfg.vips {
		present, err := next.has(vip)
		if err != nil {
			a.m.failed(opRemove)
			return err
		}
		if !present {
			continue
		}
		if err := next.remove(vip); err != nil {
			a.m.failed(opRemove)
			return err
		}
		a.log.Warn().Str("vip", vip.String()).Str("interface", cfg.ifname).
			Msg("removed vip left on the interface by an earlier run")
	}

	var sender *arpSender
	for _, vip := range cfg.vips {
		if vip.Is4() {
			if sender, err = newARPSender(ifi); err != nil {
				return err
			}
			break
		}
	}

	a.cfg, a.addrs, a.arp = &cfg, next, sender
	for _, vip := range cfg.vips {
		a.m.vipHeld.WithLabelValues(vip.String()).Set(0)
	}
	a.log.Info().Str("interface", cfg.ifname).Str("vips", joinVIPs(cfg.vips)).
		Dur("refresh", cfg.refresh).Msg("configured")
	return nil
}

// Acquire puts every VIP on the interface, announces them at once, and
// keeps announcing them every refresh interval until Release or Close.
// Acquiring again while held only makes sure the VIPs are still there.
//
// A failed announcement does not fail Acquire: the VIP is in place, hosts
// reach it once their ARP entries age out, the refresh tries again, and the
// errors metric shows it.
func (a *Announcer) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg == nil {
		return ErrNotConfigured
	}
	for _, vip := range a.cfg.vips {
		if err := a.addrs.add(vip); err != nil {
			a.m.failed(opAdd)
			return err
		}
	}
	if a.held {
		return nil
	}
	a.held = true
	for _, vip := range a.cfg.vips {
		a.m.vipHeld.WithLabelValues(vip.String()).Set(1)
	}
	a.log.Info().Str("interface", a.cfg.ifname).Str("vips", joinVIPs(a.cfg.vips)).Msg("acquired")

	vips, sender := a.cfg.vips, a.arp
	a.announce(sender, vips)
	a.refresh = startRefresher(a.cfg.refresh, func() { a.announce(sender, vips) })
	return nil
}

// announce sends one round of gratuitous ARP for the IPv4 VIPs. It runs on
// the refresher's goroutine too, so it touches nothing a.mu guards.
func (a *Announcer) announce(sender *arpSender, vips []netip.Addr) {
	if sender == nil {
		return
	}
	for _, vip := range vips {
		if !vip.Is4() {
			continue // IPv6 VIPs are only added, see the package doc.
		}
		n, err := sender.gratuitous(vip)
		a.garpSent.Add(uint64(n))
		a.m.garpSent.Add(float64(n))
		if err != nil {
			a.m.failed(opGARP)
			a.log.Error().Err(err).Str("vip", vip.String()).Msg("gratuitous arp")
		}
	}
}

// Release stops the announcements and takes the VIPs off the interface.
// Releasing what is not held is fine, and still removes the VIPs, so a
// half-failed Acquire is cleaned up too.
func (a *Announcer) Release(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.release()
}

func (a *Announcer) release() error {
	if a.refresh != nil {
		a.refresh.halt()
		a.refresh = nil
	}
	if a.cfg == nil {
		return nil
	}
	wasHeld := a.held
	a.held = false
	var errs []error
	for _, vip := range a.cfg.vips {
		a.m.vipHeld.WithLabelValues(vip.String()).Set(0)
		if err := a.addrs.remove(vip); err != nil {
			a.m.failed(opRemove)
			errs = append(errs, err)
		}
	}
	if wasHeld {
		a.log.Info().Str("interface", a.cfg.ifname).Str("vips", joinVIPs(a.cfg.vips)).Msg("released")
	}
	return errors.Join(errs...)
}

func (a *Announcer) closeARP() {
	if a.arp == nil {
		return
	}
	if err := a.arp.close(); err != nil {
		a.log.Warn().Err(err).Msg("close arp socket")
	}
	a.arp = nil
}

// Close releases the VIPs and closes the sockets. It is what runs when the
// plugin is stopped or gets SIGTERM, so a dying announcer leaves no VIP
// behind. Closing twice is fine; a later Configure starts afresh.
func (a *Announcer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.release()
	a.closeARP()
	if a.nl != nil {
		a.nl.Close()
		a.nl = nil
	}
	a.cfg, a.addrs = nil, nil
	if err != nil {
		return fmt.Errorf("close announcer: %w", err)
	}
	return nil
}

// Status reports holding or released, with the interface, the VIPs and how
// many gratuitous ARP packets were sent since the start.
func (a *Announcer) Status(context.Context) (*pb.PluginStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &pb.PluginStatus{
		State:   StateReleased,
		Details: map[string]string{"garp_sent": strconv.FormatUint(a.garpSent.Load(), 10)},
	}
	if a.held {
		st.State = StateHolding
	}
	if a.cfg != nil {
		st.Details["interface"] = a.cfg.ifname
		st.Details["vips"] = joinVIPs(a.cfg.vips)
	}
	return st, nil
}

// Gather implements prometheus.Gatherer with the announcer's own registry.
func (a *Announcer) Gather() ([]*dto.MetricFamily, error) { return a.m.reg.Gather() }

var _ prometheus.Gatherer = (*Announcer)(nil)

func joinVIPs(vips []netip.Addr) string {
	s := make([]string, len(vips))
	for i, v := range vips {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

// refresher calls a function every interval on its own goroutine until
// halted.
type refresher struct {
	stop context.CancelFunc
	done chan struct{}
}

func startRefresher(every time.Duration, round func()) *refresher {
	ctx, stop := context.WithCancel(context.Background())
	r := &refresher{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				round()
			}
		}
	}()
	return r
}

// halt stops the refresher and waits for a round in progress to finish, so
// no announcement goes out after Release returns.
func (r *refresher) halt() {
	r.stop()
	<-r.done
}

// Watch reports the interface as usable and holds the stream open until ctx
// ends. Link and carrier events are not watched yet, so it never changes.
func (a *Announcer) Watch(ctx context.Context, send func(*pb.InterfaceEvent) error) error {
	if err := send(&pb.InterfaceEvent{Usable: true}); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

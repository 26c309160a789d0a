// Package announcer puts keep-vip's VIPs on an interface and tells the
// segment about them, in the manner of MetalLB's layer2 mode: gratuitous
// ARP for IPv4 VIPs, unsolicited neighbour advertisements for IPv6 ones. One
// small type per concern: addrs (netlink), arpSender and ndpSender (one
// packet each), speaker (their sockets), refresher (burst and repeat),
// linkWatcher (netlink subscriptions), an rpc.Feed (Watch streams), bgpSpeaker
// (BGP mode, bgp.go: host routes to routers, GoBGP in-process), and
// Announcer tying them to rpc.Announcer.
//
// Robustness: the interface's state is followed through netlink; an
// interface that is down or has no carrier is reported unusable on Watch,
// and a VIP that someone else removes while it is held is added back at
// once, announced again and counted.
//
// Network namespace: Configure opens the netlink handle in the network
// namespace of the thread that calls it, and remembers that namespace:
// every socket opened later (ARP, NDP, subscriptions) is opened in it, so
// the announcer stays in that namespace whatever thread later calls run on.
package announcer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
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
	state    *rpc.Feed[*pb.InterfaceEvent] // what Watch streams follow
	garpSent atomic.Uint64
	naSent   atomic.Uint64
	sendErrs sendErrors
	bgp      *bgpSpeaker // BGP mode (bgp.go); idle without a bgp config

	mu      sync.Mutex
	ns      *netnsRef       // opened with nl
	nl      *netlink.Handle // opened by the first Configure
	sp      *speaker        // opened with nl
	cfg     *config         // nil until Configure succeeds, and after Close
	addrs   *addrs
	watcher *linkWatcher // non-nil while configured
	held    bool
	term    uint64     // the Raft term the VIPs are held for
	refresh *refresher // non-nil while held
	// The interface's state as last read, and how many VIPs were added
	// back since the start; published to Watch streams on every change.
	usable bool
	reason string
	readds uint64
}

var _ rpc.Announcer = (*Announcer)(nil)

// New returns an announcer that holds nothing until configured.
func New(log zerolog.Logger) *Announcer {
	m := newMetrics()
	return &Announcer{
		log:    log,
		m:      m,
		bgp:    newBGPSpeaker(log, m),
		state:  newInterfaceFeed(),
		usable: true,
	}
}

// Configure validates cfg, releases what an earlier config held, and takes
// off the interface any of cfg's VIPs that are on it already: they can only
// be left over from a run that died, and a fresh announcer holds nothing.
// It then starts watching the interface.
//
// An invalid cfg, or one naming an interface that does not exist, changes
// nothing. A failure after that leaves the announcer unconfigured.
func (a *Announcer) Configure(ctx context.Context, c *pb.AnnouncerConfig) error {
	cfg, err := parseConfig(c)
	if err != nil {
		a.m.failed(opConfigure)
		return fmt.Errorf("configure announcer: %w", err)
	}
	a.mu.Lock()
	old, err := a.configure(cfg)
	a.mu.Unlock()
	if old != nil {
		old.wait()
	}
	if err != nil {
		a.m.failed(opConfigure)
		return fmt.Errorf("configure announcer: %w", err)
	}
	return nil
}

// configure does Configure's work under a.mu. It returns the watcher of the
// old config, stopping: the caller waits for it once a.mu is unlocked, as
// the watcher may be waiting for a.mu itself.
func (a *Announcer) configure(cfg config) (*linkWatcher, error) {
	if a.nl == nil {
		ns, err := currentNetns()
		if err != nil {
			return nil, err
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			ns.close()
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		a.ns, a.nl, a.sp = ns, h, &speaker{ns: ns}
	}
	next := &addrs{h: a.nl, ifname: cfg.ifname}
	ifi, err := next.iface()
	if err != nil {
		return nil, err
	}

	// From here on the old config is gone, whatever happens.
	old := a.watcher
	if old != nil {
		old.signal()
	}
	relErr := a.release()
	if err := a.sp.reset(ifi); err != nil {
		a.log.Warn().Err(err).Msg("close announcement sockets")
	}
	a.cfg, a.addrs, a.watcher = nil, nil, nil
	a.m.vipHeld.Reset()
	a.m.usable.Reset()
	if relErr != nil {
		return old, relErr
	}
	for _, vip := range cfg.vips {
		present, err := next.has(vip)
		if err != nil {
			a.m.failed(opRemove)
			return old, err
		}
		if !present {
			continue
		}
		if err := next.remove(vip); err != nil {
			a.m.failed(opRemove)
			return old, err
		}
		a.log.Warn().Str("vip", vip.String()).Str("interface", cfg.ifname).
			Msg("removed vip left on the interface by an earlier run")
	}

	// With no VIP on the interface, the kernel's source address for each
	// router is a real one; the same bgp config (and sources) keeps its
	// sessions up across a reload.
	if cfg.bgp != nil {
		a.bgp.bindSources(cfg.bgp, a.nl)
	}
	if err := a.bgp.configure(cfg.bgpRaw, cfg.bgp); err != nil {
		a.m.failed(opBGP)
		return old, err
	}

	if cfg.has4() {
		// Without an ARP socket no IPv4 VIP can be announced: a lasting
		// problem (no ethernet address), so Configure fails on it.
		if err := a.sp.open4(); err != nil {
			return old, err
		}
	}
	if cfg.has6() {
		// The NDP socket needs a link-local address, which comes and goes
		// with the link (and is tentative for a while after it comes up):
		// not worth failing for now, it is opened again when needed.
		if err := a.sp.open6(); err != nil {
			a.log.Warn().Err(err).Msg("ipv6 vips: neighbour advertisements will be tried again on every announcement")
		}
	}

	a.cfg, a.addrs = &cfg, next
	for _, vip := range cfg.vips {
		a.m.vipHeld.WithLabelValues(vip.String()).Set(0)
		a.m.readds.WithLabelValues(vip.String())
	}
	a.refreshLinkLocked()
	a.watcher = startLinkWatcher(a.ns, a.log, a, cfg.refresh, func() { a.m.failed(opWatch) })
	a.log.Info().Str("interface", cfg.ifname).Str("vips", joinVIPs(cfg.vips)).
		Dur("refresh", cfg.refresh).Int("burst", cfg.burst).Dur("burst_interval", cfg.spacing).
		Bool("usable", a.usable).Msg("configured")
	return old, nil
}

// Acquire puts every VIP on the interface, announces them at once and
// burst-1 more times burst_interval apart, and then every refresh interval
// until Release or Close. In BGP mode it then advertises them to the
// routers, with a MED from req's term. Acquiring again while held only
// makes sure the VIPs are still there, and advertises them again if the
// term changed.
//
// A failed announcement does not fail Acquire: the VIP is in place, hosts
// reach it once their neighbour entries age out, the next round tries
// again, and the errors metric shows it.
func (a *Announcer) Acquire(ctx context.Context, req *pb.AcquireRequest) error {
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
			if !a.held {
				// All or nothing: a caller whose Acquire failed holds
				// nothing and will not release, so no VIP may stay.
				if rerr := a.release(); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
			return err
		}
	}
	if a.held {
		if err := a.bgp.advertise(a.cfg.vips, req.GetTerm()); err != nil {
			a.m.failed(opBGP)
			return err
		}
		a.term = req.GetTerm()
		return nil
	}
	a.held, a.term = true, req.GetTerm()
	for _, vip := range a.cfg.vips {
		a.m.vipHeld.WithLabelValues(vip.String()).Set(1)
	}
	a.log.Info().Str("interface", a.cfg.ifname).Str("vip", a.cfg.vips[0].String()).Str("vips", joinVIPs(a.cfg.vips)).Msg("acquired")

	vips := a.cfg.vips
	a.announce(vips)
	a.refresh = startRefresher(a.cfg.burst, a.cfg.spacing, a.cfg.refresh, func() { a.announce(vips) })
	// After the VIPs are on the interface: a router that sends traffic
	// at once finds them there.
	if err := a.bgp.advertise(vips, a.term); err != nil {
		a.m.failed(opBGP)
		return errors.Join(err, a.release())
	}
	return nil
}

// announce sends one round of announcements for vips. It runs on the
// refresher's goroutine too, so it touches nothing a.mu guards.
func (a *Announcer) announce(vips []netip.Addr) {
	for _, vip := range vips {
		n, err := a.sp.announce(vip)
		op := opGARP
		if vip.Is4() {
			a.garpSent.Add(uint64(n))
			a.m.garpSent.Add(float64(n))
		} else {
			op = opNA
			a.naSent.Add(uint64(n))
			a.m.naSent.Add(float64(n))
		}
		if err != nil {
			a.m.failed(op)
		}
		a.sendErrs.note(a.log, vip, err)
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
	// Not held any more before the VIPs go: the watcher must not take
	// their removal for someone else's and add them back.
	a.held, a.term = false, 0
	var errs []error
	// The routers first: no traffic is sent here once the VIPs are gone.
	if err := a.bgp.withdraw(); err != nil {
		a.m.failed(opBGP)
		errs = append(errs, err)
	}
	for _, vip := range a.cfg.vips {
		a.m.vipHeld.WithLabelValues(vip.String()).Set(0)
		if err := a.addrs.remove(vip); err != nil {
			a.m.failed(opRemove)
			errs = append(errs, err)
		}
	}
	if wasHeld {
		a.log.Info().Str("interface", a.cfg.ifname).Str("vip", a.cfg.vips[0].String()).Str("vips", joinVIPs(a.cfg.vips)).Msg("released")
	}
	return errors.Join(errs...)
}

// Close releases the VIPs, stops watching the interface and closes the
// sockets. It is what runs when the plugin is stopped or gets SIGTERM, so a
// dying announcer leaves no VIP behind. Closing twice is fine; a later
// Configure starts afresh.
func (a *Announcer) Close() error {
	a.mu.Lock()
	err := a.release()
	w := a.watcher
	if w != nil {
		w.signal()
	}
	ns := a.ns
	a.bgp.close()
	if a.sp != nil {
		if cerr := a.sp.close(); cerr != nil {
			a.log.Warn().Err(cerr).Msg("close announcement sockets")
		}
	}
	if a.nl != nil {
		a.nl.Close()
	}
	a.ns, a.nl, a.sp, a.cfg, a.addrs, a.watcher = nil, nil, nil, nil, nil, nil
	a.mu.Unlock()
	if w != nil {
		w.wait()
	}
	if ns != nil {
		ns.close() // the watcher, which opens sockets in it, is gone
	}
	if err != nil {
		return fmt.Errorf("close announcer: %w", err)
	}
	return nil
}

// Watch sends the interface's state at once and on every change (usable,
// reason, or the count of VIPs added back), to any number of streams at
// once, until ctx ends or send fails.
func (a *Announcer) Watch(ctx context.Context, send func(*pb.InterfaceEvent) error) error {
	return a.state.Watch(ctx, send)
}

// newInterfaceFeed starts out usable: nothing has said otherwise yet.
func newInterfaceFeed() *rpc.Feed[*pb.InterfaceEvent] {
	f := rpc.NewFeed[*pb.InterfaceEvent](nil)
	f.Publish(&pb.InterfaceEvent{Usable: true})
	return f
}

// current is the interface state last sent to the Watch streams.
func (a *Announcer) current() *pb.InterfaceEvent {
	ev, _ := a.state.Latest()
	return ev
}

// linkChanged implements linkEvents: an update about our interface (by
// name, or by the index it had) has the state read afresh.
func (a *Announcer) linkChanged(w *linkWatcher, name string, index int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watcher != w || a.cfg == nil {
		return
	}
	if name != a.cfg.ifname && index != a.sp.interfaceIndex() {
		return
	}
	a.refreshLinkLocked()
}

// addrGone implements linkEvents: a host address that is one of our VIPs
// went away while held; whoever removed it, it goes back at once.
func (a *Announcer) addrGone(w *linkWatcher, u netlink.AddrUpdate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watcher != w || a.cfg == nil || !a.held {
		return
	}
	ones, bits := u.LinkAddress.Mask.Size()
	ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
	if !ok || ones != bits || !slices.Contains(a.cfg.vips, ip.Unmap()) {
		return
	}
	if a.ensureVIPsLocked() > 0 {
		a.refresh.kick()
	}
}

// resync implements linkEvents.
func (a *Announcer) resync(w *linkWatcher) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watcher != w || a.cfg == nil {
		return
	}
	a.refreshLinkLocked()
	if a.ensureVIPsLocked() > 0 {
		a.refresh.kick()
	}
}

// refreshLinkLocked reads the interface's state and publishes a change. An
// interface that comes back while the VIPs are held gets them back (the
// kernel takes IPv6 addresses off a link that goes down) and a new burst of
// announcements: neighbours may have flushed their entries meanwhile.
func (a *Announcer) refreshLinkLocked() {
	l, err := a.addrs.link()
	usable, reason := false, ""
	switch {
	case errors.Is(err, ErrInterfaceNotFound):
		reason = fmt.Sprintf("interface %s is gone", a.cfg.ifname)
	case err != nil:
		a.m.failed(opWatch)
		a.log.Warn().Err(err).Msg("read interface state")
		return
	default:
		usable, reason = linkUsable(l)
		if at := l.Attrs(); at.Index != a.sp.interfaceIndex() {
			// Recreated: sockets bound to the old one are useless.
			a.log.Info().Str("interface", at.Name).Int("index", at.Index).Msg("interface has a new index; reopening sockets")
			if err := a.sp.reset(ifaceOf(l)); err != nil {
				a.log.Warn().Err(err).Msg("close announcement sockets")
			}
		}
	}
	wasUsable := a.usable
	a.m.usable.WithLabelValues(a.cfg.ifname).Set(b2f(usable))
	if usable != a.usable || reason != a.reason {
		ev := a.log.Info()
		if !usable {
			ev = a.log.Warn()
		}
		ev.Str("interface", a.cfg.ifname).Bool("usable", usable).Str("reason", reason).Msg("interface changed")
	}
	a.usable, a.reason = usable, reason
	a.publishLocked()
	if usable && !wasUsable && a.held {
		a.ensureVIPsLocked()
		a.refresh.kick()
	}
}

// ensureVIPsLocked adds back every held VIP missing from a usable
// interface, counts them, publishes the count and returns how many it added
// back; the caller starts a new burst of announcements for them.
func (a *Announcer) ensureVIPsLocked() int {
	if !a.held {
		return 0
	}
	// On a link that is down the kernel removes IPv6 addresses itself; the
	// VIPs come back with the link (refreshLinkLocked), and meanwhile the
	// supervisor gives them up anyway.
	if l, err := a.addrs.link(); err != nil {
		return 0
	} else if ok, _ := linkUsable(l); !ok {
		return 0
	}
	readded := 0
	for _, vip := range a.cfg.vips {
		present, err := a.addrs.has(vip)
		if err != nil || present {
			if err != nil {
				a.m.failed(opReadd)
				a.log.Warn().Err(err).Str("vip", vip.String()).Msg("check vip")
			}
			continue
		}
		if err := a.addrs.add(vip); err != nil {
			a.m.failed(opReadd)
			a.log.Error().Err(err).Str("vip", vip.String()).Msg("vip missing from the interface while held; adding it back failed")
			continue
		}
		readded++
		a.readds++
		a.m.readds.WithLabelValues(vip.String()).Inc()
		a.log.Warn().Str("vip", vip.String()).Str("interface", a.cfg.ifname).Uint64("readds", a.readds).
			Msg("vip was missing from the interface while held; added it back")
	}
	if readded > 0 {
		a.publishLocked()
	}
	return readded
}

// publishLocked sends the current state to the Watch streams if it differs
// from what they were last sent.
func (a *Announcer) publishLocked() {
	last := a.current()
	if last.GetUsable() == a.usable && last.GetReason() == a.reason && last.GetReadds() == a.readds {
		return
	}
	a.state.Publish(&pb.InterfaceEvent{Usable: a.usable, Reason: a.reason, Readds: a.readds})
}

// linkUsable tells whether the link can carry the VIP: administratively up,
// with carrier (IFF_LOWER_UP), and operationally up. Unknown counts as up:
// some drivers never report an operational state.
func linkUsable(l netlink.Link) (bool, string) {
	at := l.Attrs()
	switch {
	case at.Flags&net.FlagUp == 0:
		return false, fmt.Sprintf("interface %s is down", at.Name)
	case at.RawFlags&unix.IFF_LOWER_UP == 0:
		return false, fmt.Sprintf("interface %s has no carrier", at.Name)
	case at.OperState != netlink.OperUp && at.OperState != netlink.OperUnknown:
		return false, fmt.Sprintf("interface %s is operationally %s", at.Name, at.OperState)
	}
	return true, ""
}

// Status reports holding or released, with the interface, the VIPs, its
// state and the announcements sent and VIPs added back since the start.
func (a *Announcer) Status(context.Context) (*pb.PluginStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &pb.PluginStatus{
		State: StateReleased,
		Details: map[string]string{
			"garp_sent": strconv.FormatUint(a.garpSent.Load(), 10),
			"na_sent":   strconv.FormatUint(a.naSent.Load(), 10),
			"readds":    strconv.FormatUint(a.readds, 10),
			"usable":    strconv.FormatBool(a.usable),
		},
	}
	st.Announcer = &pb.AnnouncerStatus{Held: a.held, BgpPeers: a.bgp.status()}
	if len(st.Announcer.BgpPeers) > 0 {
		st.Details["term"] = strconv.FormatUint(a.term, 10)
		for _, p := range st.Announcer.BgpPeers {
			v := p.State
			if len(p.Advertised) > 0 {
				v += ", advertising " + strings.Join(p.Advertised, ",")
			}
			if p.LastError != "" && p.State != bgpStateEstablished {
				v += ": " + p.LastError
			}
			st.Details["bgp_peer "+p.Address] = v
		}
	}
	if a.held {
		st.State = StateHolding
	}
	if a.cfg != nil {
		missing, err := a.missingLocked()
		if err != nil {
			return nil, err
		}
		st.Announcer.MissingVips = missing
	}
	if a.reason != "" {
		st.Details["reason"] = a.reason
	}
	if a.cfg != nil {
		st.Details["interface"] = a.cfg.ifname
		st.Details["vips"] = joinVIPs(a.cfg.vips)
	}
	return st, nil
}

// missingLocked lists the configured VIPs not on the interface as host
// addresses, read from the kernel now: the supervisor's check that a held
// VIP is really there.
func (a *Announcer) missingLocked() ([]string, error) {
	var out []string
	for _, vip := range a.cfg.vips {
		present, err := a.addrs.has(vip)
		if err != nil && !errors.Is(err, ErrInterfaceNotFound) {
			return nil, fmt.Errorf("status: %w", err)
		}
		if !present { // a missing interface took its addresses with it
			out = append(out, vip.String())
		}
	}
	return out, nil
}

// Validate checks c as Configure would, touching nothing: the Validate RPC.
func (a *Announcer) Validate(_ context.Context, c *pb.AnnouncerConfig) error {
	_, err := parseConfig(c)
	return err
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

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sendErrors keeps the last announcement error per VIP, so a failure that
// lasts (IPv6 off on the interface, say) is logged once as an error, not
// every round, and its end is logged too.
type sendErrors struct {
	mu   sync.Mutex
	last map[netip.Addr]string
}

func (s *sendErrors) note(log zerolog.Logger, vip netip.Addr, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.last[vip]
	switch {
	case err == nil && prev != "":
		delete(s.last, vip)
		log.Info().Str("vip", vip.String()).Msg("announcements go out again")
	case err == nil:
	case err.Error() != prev:
		if s.last == nil {
			s.last = map[netip.Addr]string{}
		}
		s.last[vip] = err.Error()
		log.Error().Err(err).Str("vip", vip.String()).Msg("announce vip")
	default:
		log.Debug().Err(err).Str("vip", vip.String()).Msg("announce vip")
	}
}

// refresher runs announcement rounds on its own goroutine until halted: a
// burst of rounds spacing apart (the first is the caller's, at once), then
// one every interval. kick starts a new burst at once.
type refresher struct {
	stop  context.CancelFunc
	done  chan struct{}
	kicks chan struct{}
}

func startRefresher(burst int, spacing, every time.Duration, round func()) *refresher {
	ctx, stop := context.WithCancel(context.Background())
	r := &refresher{stop: stop, done: make(chan struct{}), kicks: make(chan struct{}, 1)}
	go func() {
		defer close(r.done)
		// due is how many rounds of the current burst are still to come.
		due := burst - 1
		next := func() time.Duration {
			if due > 0 {
				return spacing
			}
			return every
		}
		t := time.NewTimer(next())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.kicks:
				round()
				due = burst - 1
			case <-t.C:
				round()
				if due > 0 {
					due--
				}
			}
			t.Reset(next())
		}
	}()
	return r
}

// kick asks for a new burst; a kick already pending covers this one. It is
// safe on a nil refresher (nothing held).
func (r *refresher) kick() {
	if r == nil {
		return
	}
	select {
	case r.kicks <- struct{}{}:
	default:
	}
}

// halt stops the refresher and waits for a round in progress to finish, so
// no announcement goes out after Release returns.
func (r *refresher) halt() {
	r.stop()
	<-r.done
}

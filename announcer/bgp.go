package announcer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"

	api "github.com/osrg/gobgp/v3/api"
	bgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// BGP mode: the holder advertises each VIP as a host route to routers,
// beside the ARP/NDP announcements. GoBGP runs in the announcer's process
// as a library, one BgpServer for the process's life (its event loop has
// no end), started afresh when the bgp config changes.
//
// Sessions are up on every member, holder or not, so that an Acquire is
// one UPDATE on an established session. The routes carry a MED derived
// from the Raft term (medOf): a router prefers the newest holder's route
// as soon as it arrives, even while a crashed holder's route waits for the
// hold timer, as routes from one neighbouring AS are compared by MED.
//
// GoBGP opens its sockets on its own goroutines: the sessions are in the
// network namespace of the process, not of the thread that configured
// the announcer.

// Session states, as status shows them.
const (
	bgpStateEstablished = "established"
	bgpStateIdle        = "idle"
)

// medOf is the MED of the routes held for term: lower is preferred, so
// a later term wins. Term 0 (a supervisor that does not say) is the worst.
func medOf(term uint64) uint32 {
	return uint32(math.MaxUint32 - min(term, math.MaxUint32))
}

// bgpSpeaker is the announcer's BGP side. Its methods are safe for
// concurrent use; GoBGP's callbacks (events, log lines) take mu only, and
// the calls into GoBGP happen under opMu only, so neither waits for the
// other.
type bgpSpeaker struct {
	log zerolog.Logger
	m   *metrics

	opMu    sync.Mutex
	srv     *server.BgpServer
	running *pb.BgpConfig // the config started, nil while stopped
	cancel  context.CancelFunc

	mu       sync.Mutex
	cfg      *bgpConfig // of running
	sessions map[netip.Addr]*bgpSession
	routes   []netip.Addr // VIPs in the speaker's table
	term     uint64
}

// bgpSession is what is known of one peer's session.
type bgpSession struct {
	state     string
	up        bool
	lastError string
	logged    string // the last error logged, so a lasting one is logged once
}

func newBGPSpeaker(log zerolog.Logger, m *metrics) *bgpSpeaker {
	return &bgpSpeaker{log: log.With().Str("component", "bgp").Logger(), m: m}
}

// bindSources sets each peer's source address to the one the kernel
// picks for it now, through h. Configure calls it while no VIP is on the
// interface: once one is, the kernel may pick the VIP itself as the
// source (an IPv6 VIP in the router's prefix does), the router does not
// know the session, and it stays down. A peer with no route yet is left
// to the kernel's choice at connect time.
func (b *bgpSpeaker) bindSources(c *bgpConfig, h *netlink.Handle) {
	for i, p := range c.peers {
		routes, err := h.RouteGet(p.addr.AsSlice())
		if err != nil || len(routes) == 0 {
			b.log.Warn().Err(err).Str("peer", p.addr.String()).Msg("no route to the bgp peer yet; its session's source address is left to the kernel")
			continue
		}
		if src, ok := netip.AddrFromSlice(routes[0].Src); ok && src.IsValid() && !src.IsUnspecified() {
			c.peers[i].local = src.Unmap()
		}
	}
}

// configure starts the speaker with c (nil stops it). The same config as
// the running one, with the same sources, changes nothing: a reload does
// not bounce the sessions.
func (b *bgpSpeaker) configure(raw *pb.BgpConfig, c *bgpConfig) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	if c != nil && b.running != nil && proto.Equal(raw, b.running) && b.sameSources(c) {
		return nil
	}
	b.stopLocked()
	if c == nil {
		return nil
	}
	if b.srv == nil {
		b.srv = server.NewBgpServer(server.LoggerOption(&bgpLogger{b: b}))
		go b.srv.Serve()
	}
	ctx := context.Background()
	err := b.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        c.asn,
		RouterId:   c.routerID.String(),
		ListenPort: -1, // the members connect; they need not listen
	}})
	if err != nil {
		return fmt.Errorf("start bgp: %w", err)
	}
	b.mu.Lock()
	b.cfg, b.sessions, b.routes, b.term = c, map[netip.Addr]*bgpSession{}, nil, 0
	for _, p := range c.peers {
		b.sessions[p.addr] = &bgpSession{state: bgpStateIdle}
		b.m.bgpUp.WithLabelValues(p.addr.String()).Set(0)
		b.m.bgpErrors.WithLabelValues(p.addr.String())
	}
	b.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	if err := b.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, b.event); err != nil {
		cancel()
		b.stopLocked()
		return fmt.Errorf("watch bgp sessions: %w", err)
	}
	b.cancel, b.running = cancel, raw
	for _, p := range c.peers {
		if err := b.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerOf(c, p)}); err != nil {
			b.stopLocked()
			return fmt.Errorf("bgp peer %s: %w", p.addr, err)
		}
	}
	peers := make([]string, len(c.peers))
	for i, p := range c.peers {
		peers[i] = fmt.Sprintf("%s (AS %d", p.addr, p.asn)
		if p.local.IsValid() {
			peers[i] += ", from " + p.local.String()
		}
		peers[i] += ")"
	}
	b.log.Info().Uint32("asn", c.asn).Str("router_id", c.routerID.String()).Str("peers", strings.Join(peers, ", ")).
		Msg("bgp speaker started")
	return nil
}

// sameSources tells whether c's peers have the sources of the running ones.
func (b *bgpSpeaker) sameSources(c *bgpConfig) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg == nil || len(b.cfg.peers) != len(c.peers) {
		return false
	}
	for i := range c.peers {
		if b.cfg.peers[i].local != c.peers[i].local {
			return false
		}
	}
	return true
}

// stopLocked ends every session (a Cease goes to each router, which drops
// the routes at once) and forgets the config.
func (b *bgpSpeaker) stopLocked() {
	if b.running == nil {
		return
	}
	if err := b.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
		b.log.Warn().Err(err).Msg("stop bgp")
	}
	b.cancel()
	b.running, b.cancel = nil, nil
	b.mu.Lock()
	b.cfg, b.sessions, b.routes, b.term = nil, nil, nil, 0
	b.m.bgpUp.Reset()
	b.mu.Unlock()
	b.log.Info().Msg("bgp speaker stopped")
}

// close stops the speaker for good.
func (b *bgpSpeaker) close() {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.stopLocked()
}

// peerOf is GoBGP's peer for p: only the address family of p's address,
// so each router gets the VIPs its session can carry a next hop for.
func peerOf(c *bgpConfig, p bgpPeer) *api.Peer {
	hold := uint64(p.hold.Seconds())
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.addr.String(),
			PeerAsn:         p.asn,
			LocalAsn:        c.asn,
			AuthPassword:    p.password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               hold,
			KeepaliveInterval:      max(hold/3, 1),
			ConnectRetry:           uint64(bgpConnectRetry.Seconds()),
			IdleHoldTimeAfterReset: uint64(bgpConnectRetry.Seconds()),
		}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: familyOf(p.addr), Enabled: true}}},
	}
	if p.port != 0 || p.local.IsValid() {
		out.Transport = &api.Transport{RemotePort: p.port}
		if p.local.IsValid() {
			out.Transport.LocalAddress = p.local.String()
		}
	}
	if p.multihop != 0 {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: p.multihop}
	}
	return out
}

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// advertise puts vips in the table with term's MED: every established
// session gets them now, a session that comes up later on its start.
// Advertising again for another term replaces the routes.
func (b *bgpSpeaker) advertise(vips []netip.Addr, term uint64) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	same := b.cfg == nil || (slices.Equal(b.routes, vips) && b.term == term)
	c := b.cfg
	b.mu.Unlock()
	if same {
		return nil
	}
	var done []netip.Addr
	for _, vip := range vips {
		path, err := vipPath(vip, medOf(term), c.communities)
		if err == nil {
			_, err = b.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		}
		if err != nil {
			b.setRoutes(append(done, b.routesNotIn(vips)...), term)
			return fmt.Errorf("advertise vip %s over bgp: %w", vip, err)
		}
		done = append(done, vip)
		b.m.bgpAdvertised.WithLabelValues(vip.String()).Inc()
	}
	b.setRoutes(done, term)
	b.log.Info().Str("vips", joinVIPs(vips)).Uint64("term", term).Uint32("med", medOf(term)).
		Str("established", strings.Join(b.establishedPeers(), ",")).Msg("bgp routes advertised")
	return nil
}

// withdraw takes every VIP route out of the table: the routers hear it
// at once on every established session.
func (b *bgpSpeaker) withdraw() error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	routes, c := b.routes, b.cfg
	b.mu.Unlock()
	if c == nil || len(routes) == 0 {
		return nil
	}
	var errs []error
	var left []netip.Addr
	for _, vip := range routes {
		path, err := vipPath(vip, 0, nil)
		if err == nil {
			err = b.srv.DeletePath(context.Background(), &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: familyOf(vip), Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw vip %s over bgp: %w", vip, err))
			left = append(left, vip)
			continue
		}
		b.m.bgpWithdrawn.WithLabelValues(vip.String()).Inc()
	}
	b.mu.Lock()
	b.routes = left
	if len(left) == 0 {
		b.term = 0
	}
	b.mu.Unlock()
	b.log.Info().Str("vips", joinVIPs(routes)).Msg("bgp routes withdrawn")
	return errors.Join(errs...)
}

// routesNotIn is the routes held now that vips does not list (still held
// after a failed advertise).
func (b *bgpSpeaker) routesNotIn(vips []netip.Addr) []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []netip.Addr
	for _, r := range b.routes {
		if !slices.Contains(vips, r) {
			out = append(out, r)
		}
	}
	return out
}

func (b *bgpSpeaker) setRoutes(routes []netip.Addr, term uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.routes, b.term = routes, term
}

func (b *bgpSpeaker) establishedPeers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	if b.cfg == nil {
		return nil
	}
	for _, p := range b.cfg.peers {
		if s := b.sessions[p.addr]; s != nil && s.up {
			out = append(out, p.addr.String())
		}
	}
	return out
}

// vipPath is vip's host route: origin IGP, the next hop left for GoBGP to
// fill with the session's local address, the MED and the communities.
func vipPath(vip netip.Addr, med uint32, communities []uint32) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: vip.String(), PrefixLen: uint32(vip.BitLen())})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}, &api.MultiExitDiscAttribute{Med: med}}
	if vip.Is4() {
		attrs = append(attrs, &api.NextHopAttribute{NextHop: "0.0.0.0"})
	} else {
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: familyOf(vip), NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
	}
	if len(communities) > 0 {
		attrs = append(attrs, &api.CommunitiesAttribute{Communities: communities})
	}
	out := &api.Path{Family: familyOf(vip), Nlri: nlri}
	for _, a := range attrs {
		x, err := anypb.New(a)
		if err != nil {
			return nil, err
		}
		out.Pattrs = append(out.Pattrs, x)
	}
	return out, nil
}

// event follows the sessions' states from GoBGP's peer events.
func (b *bgpSpeaker) event(ev *api.WatchEventResponse) {
	pe := ev.GetPeer()
	if pe == nil || pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	st := pe.GetPeer().GetState()
	addr, err := netip.ParseAddr(st.GetNeighborAddress())
	if err != nil {
		return
	}
	addr = addr.Unmap()
	state := strings.ToLower(strings.TrimPrefix(st.GetSessionState().String(), "SESSION_STATE_"))
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[addr]
	if s == nil {
		return // a peer of a config since replaced
	}
	s.state = state
	up := state == bgpStateEstablished
	if up == s.up {
		return
	}
	s.up = up
	b.m.bgpUp.WithLabelValues(addr.String()).Set(b2f(up))
	if up {
		s.lastError, s.logged = "", ""
		b.log.Info().Str("peer", addr.String()).Uint32("peer_asn", st.GetPeerAsn()).Str("peer_router_id", st.GetRouterId()).
			Int("routes", len(b.routesForLocked(addr))).Msg("bgp session established")
		return
	}
	b.m.bgpErrors.WithLabelValues(addr.String()).Inc()
	s.logged = s.lastError
	b.log.Warn().Str("peer", addr.String()).Str("state", state).Str("reason", s.lastError).
		Msg("bgp session down; the router drops this member's routes")
}

// routesForLocked lists the routes peer gets: the held VIPs of its family.
func (b *bgpSpeaker) routesForLocked(peer netip.Addr) []string {
	var out []string
	for _, r := range b.routes {
		if r.Is4() == peer.Is4() {
			out = append(out, netip.PrefixFrom(r, r.BitLen()).String())
		}
	}
	return out
}

// sessionError records why peer's session failed, from GoBGP's log lines.
// A session that is not up logs a new reason once, and counts every one:
// a router that is down or refuses is a warning and a metric, not a
// crash and not a line every retry.
func (b *bgpSpeaker) sessionError(peer netip.Addr, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[peer]
	if s == nil {
		return
	}
	s.lastError = reason
	if s.up || reason == s.logged {
		return
	}
	s.logged = reason
	b.m.bgpErrors.WithLabelValues(peer.String()).Inc()
	b.log.Warn().Str("peer", peer.String()).Str("state", s.state).Str("reason", reason).
		Msg("bgp session not established; retrying")
}

// status reports every configured peer's session and the routes it has.
func (b *bgpSpeaker) status() []*pb.BgpPeerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg == nil {
		return nil
	}
	var out []*pb.BgpPeerStatus
	for _, p := range b.cfg.peers {
		s := b.sessions[p.addr]
		ps := &pb.BgpPeerStatus{Address: p.addr.String(), State: s.state, LastError: s.lastError}
		if s.up {
			ps.Advertised = b.routesForLocked(p.addr)
		}
		out = append(out, ps)
	}
	return out
}

// bgpLogger passes GoBGP's log lines on at debug level, and the reasons a
// session failed to the speaker.
type bgpLogger struct{ b *bgpSpeaker }

func (l *bgpLogger) line(ev *zerolog.Event, msg string, f bgplog.Fields) {
	if reason := failureOf(msg, f); reason != "" {
		if key, ok := f["Key"].(string); ok {
			if addr, err := netip.ParseAddr(key); err == nil {
				l.b.sessionError(addr.Unmap(), reason)
			}
		}
	}
	ev.Fields(map[string]any(f)).Msg("gobgp: " + msg)
}

func (l *bgpLogger) Panic(msg string, f bgplog.Fields) { l.line(l.b.log.Error(), msg, f) }
func (l *bgpLogger) Fatal(msg string, f bgplog.Fields) { l.line(l.b.log.Error(), msg, f) }
func (l *bgpLogger) Error(msg string, f bgplog.Fields) { l.line(l.b.log.Warn(), msg, f) }
func (l *bgpLogger) Warn(msg string, f bgplog.Fields)  { l.line(l.b.log.Debug(), msg, f) }
func (l *bgpLogger) Info(msg string, f bgplog.Fields)  { l.line(l.b.log.Debug(), msg, f) }
func (l *bgpLogger) Debug(msg string, f bgplog.Fields) { l.line(l.b.log.Trace(), msg, f) }

// SetLevel is ignored and GetLevel says debug: the connect failures GoBGP
// logs at debug level are what explains a router that refuses; the
// announcer's own logger filters.
func (l *bgpLogger) SetLevel(bgplog.LogLevel)  {}
func (l *bgpLogger) GetLevel() bgplog.LogLevel { return bgplog.DebugLevel }

// failureOf words a GoBGP log line that explains a failed session, or "".
func failureOf(msg string, f bgplog.Fields) string {
	switch msg {
	case "failed to connect":
		return fmt.Sprintf("connect: %v", f["Error"])
	case "received notification", "sent notification":
		code, _ := f["Code"].(uint8)
		sub, _ := f["Subcode"].(uint8)
		who := "the router refused"
		if msg == "sent notification" {
			who = "this member closed"
		}
		return fmt.Sprintf("%s the session: %s", who, notificationText(code, sub))
	case "state changed":
		// A session closed while opening: GoBGP keeps the NOTIFICATION
		// it got in OPENCONFIRM to itself, so this is all there is.
		old, _ := f["old"].(string)
		if next, _ := f["new"].(string); next != "BGP_FSM_IDLE" || (old != "BGP_FSM_OPENSENT" && old != "BGP_FSM_OPENCONFIRM") {
			return ""
		}
		return fmt.Sprintf("the session closed while opening (%s: %v); check the AS numbers, addresses and password on both sides",
			strings.ToLower(strings.TrimPrefix(old, "BGP_FSM_")), f["reason"])
	case "hold timer expired":
		return "hold timer expired: nothing heard from the router"
	case "Peer Down":
		return fmt.Sprintf("%v", f["Reason"])
	}
	return ""
}

// notificationText names the NOTIFICATION codes (RFC 4271, 4486) that a
// misconfigured session shows.
func notificationText(code, sub uint8) string {
	known := map[[2]uint8]string{
		{2, 2}: "OPEN error: bad peer AS (check the asn on both sides)",
		{2, 3}: "OPEN error: bad BGP identifier (check routerID)",
		{2, 5}: "OPEN error: authentication failure (check the password)",
		{2, 6}: "OPEN error: unacceptable hold time",
		{2, 7}: "OPEN error: unsupported capability",
		{6, 2}: "cease: administrative shutdown",
		{6, 3}: "cease: peer de-configured",
		{6, 4}: "cease: administrative reset",
		{6, 5}: "cease: connection rejected (is this member configured as a neighbour?)",
		{6, 6}: "cease: other configuration change",
		{6, 7}: "cease: connection collision resolution",
	}
	if s, ok := known[[2]uint8{code, sub}]; ok {
		return s
	}
	return fmt.Sprintf("error code %d subcode %d", code, sub)
}

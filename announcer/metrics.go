package announcer

import "github.com/prometheus/client_golang/prometheus"

// Metric names, defined once.
const (
	metricVIPHeld         = "keep_vip_announcer_vip_held"
	metricGARPSent        = "keep_vip_announcer_gratuitous_arp_sent_total"
	metricNASent          = "keep_vip_announcer_neighbor_advertisements_sent_total"
	metricReadds          = "keep_vip_announcer_vip_readds_total"
	metricInterfaceUsable = "keep_vip_announcer_interface_usable"
	metricErrors          = "keep_vip_announcer_errors_total"
	metricBGPSessionUp    = "keep_vip_announcer_bgp_session_up"
	metricBGPErrors       = "keep_vip_announcer_bgp_session_errors_total"
	metricBGPAdvertised   = "keep_vip_announcer_bgp_advertisements_total"
	metricBGPWithdrawn    = "keep_vip_announcer_bgp_withdrawals_total"
)

// Values of the op label of metricErrors.
const (
	opConfigure = "configure"
	opAdd       = "add"
	opRemove    = "remove"
	opGARP      = "garp"
	opNA        = "na"
	opReadd     = "readd"
	opWatch     = "watch"
	opBGP       = "bgp"
)

type metrics struct {
	reg      *prometheus.Registry
	vipHeld  *prometheus.GaugeVec
	garpSent prometheus.Counter
	naSent   prometheus.Counter
	readds   *prometheus.CounterVec
	usable   *prometheus.GaugeVec
	errors   *prometheus.CounterVec
	// BGP mode (bgp.go).
	bgpUp         *prometheus.GaugeVec
	bgpErrors     *prometheus.CounterVec
	bgpAdvertised *prometheus.CounterVec
	bgpWithdrawn  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		vipHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricVIPHeld,
			Help: "1 while this member holds the VIP on its interface, else 0.",
		}, []string{"vip"}),
		garpSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricGARPSent,
			Help: "Gratuitous ARP packets sent (requests and replies).",
		}),
		naSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricNASent,
			Help: "Unsolicited IPv6 neighbour advertisements sent (override flag set, to all-nodes).",
		}),
		readds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricReadds,
			Help: "VIPs found missing from the interface while held, and added back.",
		}, []string{"vip"}),
		usable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricInterfaceUsable,
			Help: "1 while the VIP interface is up and has carrier, else 0.",
		}, []string{"interface"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricErrors,
			Help: "Failed announcer operations, by operation.",
		}, []string{"op"}),
		bgpUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricBGPSessionUp,
			Help: "1 while the BGP session to the peer (a router) is established, else 0.",
		}, []string{"peer"}),
		bgpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricBGPErrors,
			Help: "BGP sessions that went down, and new reasons a session could not be established (refused, unreachable, a NOTIFICATION), by peer.",
		}, []string{"peer"}),
		bgpAdvertised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricBGPAdvertised,
			Help: "VIP host routes put in the BGP table (sent to every established peer of the VIP's family), by VIP.",
		}, []string{"vip"}),
		bgpWithdrawn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricBGPWithdrawn,
			Help: "VIP host routes withdrawn from the BGP table, by VIP.",
		}, []string{"vip"}),
	}
	m.reg.MustRegister(m.vipHeld, m.garpSent, m.naSent, m.readds, m.usable, m.errors,
		m.bgpUp, m.bgpErrors, m.bgpAdvertised, m.bgpWithdrawn)
	// Every op starts at 0 so a rate() over it works from the first scrape.
	for _, op := range []string{opConfigure, opAdd, opRemove, opGARP, opNA, opReadd, opWatch, opBGP} {
		m.errors.WithLabelValues(op)
	}
	return m
}

func (m *metrics) failed(op string) { m.errors.WithLabelValues(op).Inc() }

package announcer

import "github.com/prometheus/client_golang/prometheus"

// Metric names, defined once.
const (
	metricVIPHeld  = "keep_vip_announcer_vip_held"
	metricGARPSent = "keep_vip_announcer_gratuitous_arp_sent_total"
	metricErrors   = "keep_vip_announcer_errors_total"
)

// Values of the op label of metricErrors.
const (
	opConfigure = "configure"
	opAdd       = "add"
	opRemove    = "remove"
	opGARP      = "garp"
)

type metrics struct {
	reg      *prometheus.Registry
	vipHeld  *prometheus.GaugeVec
	garpSent prometheus.Counter
	errors   *prometheus.CounterVec
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
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricErrors,
			Help: "Failed announcer operations, by operation.",
		}, []string{"op"}),
	}
	m.reg.MustRegister(m.vipHeld, m.garpSent, m.errors)
	// Every op starts at 0 so a rate() over it works from the first scrape.
	for _, op := range []string{opConfigure, opAdd, opRemove, opGARP} {
		m.errors.WithLabelValues(op)
	}
	return m
}

func (m *metrics) failed(op string) { m.errors.WithLabelValues(op).Inc() }

package policy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, defined once.
const (
	MetricConnections        = "keep_vip_balancer_connections_total"
	MetricActiveConnections  = "keep_vip_balancer_active_connections"
	MetricBackendActive      = "keep_vip_balancer_backend_active_connections"
	MetricDialErrors         = "keep_vip_balancer_backend_dial_errors_total"
	MetricBytes              = "keep_vip_balancer_bytes_total"
	MetricBackendUp          = "keep_vip_balancer_backend_up"
	MetricEjections          = "keep_vip_balancer_backend_ejections_total"
	MetricHTTPRequests       = "keep_vip_balancer_http_requests_total"
	MetricHTTPRequestSeconds = "keep_vip_balancer_http_request_duration_seconds"
	MetricLocalErrors        = "keep_vip_balancer_local_errors_total"
)

// Values of the direction label of MetricBytes.
const (
	DirToBackend = "to_backend"
	DirToClient  = "to_client"
)

// BackendNone labels HTTP answers no backend gave (503 and the like).
const BackendNone = "none"

type Metrics struct {
	Connections   *prometheus.CounterVec
	Active        *prometheus.GaugeVec
	BackendActive *prometheus.GaugeVec
	DialErrors    *prometheus.CounterVec
	Bytes         *prometheus.CounterVec
	Up            *prometheus.GaugeVec
	Ejections     *prometheus.CounterVec
	Requests      *prometheus.CounterVec
	Duration      *prometheus.HistogramVec
	LocalErrors   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricConnections,
			Help: "Connections to a backend: tcp client connections proxied, udp sessions opened, http backend connections dialed (keep-alive reuses them).",
		}, []string{"balancer", "backend"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricActiveConnections,
			Help: "Client connections (udp: sessions) open now, including those still connecting to a backend.",
		}, []string{"balancer"}),
		BackendActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricBackendActive,
			Help: "Connections (udp: sessions, http: requests in flight) a backend serves now.",
		}, []string{"balancer", "backend"}),
		DialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDialErrors,
			Help: "Failed connects to a backend (udp: refused by it); the client was passed to the next one.",
		}, []string{"balancer", "backend"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricBytes,
			Help: "Bytes proxied, by direction (to_backend, to_client). tcp and udp count what they read; http counts what crosses backend connections, headers included.",
		}, []string{"balancer", "backend", "direction"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricBackendUp,
			Help: "1 while a backend gets new connections, 0 while its checks fail or it is ejected after connect errors.",
		}, []string{"balancer", "backend"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricEjections,
			Help: "Times a backend was taken out after consecutive connect errors.",
		}, []string{"balancer", "backend"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricHTTPRequests,
			Help: "HTTP requests answered, by status code; backend=none for answers the balancer gave itself (503 with every backend down).",
		}, []string{"balancer", "backend", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricHTTPRequestSeconds,
			Help:    "HTTP request duration, from the request's headers to the end of the response body.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"balancer", "backend"}),
		LocalErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricLocalErrors,
			Help: "Failures of the balancer's own resources (out of descriptors, memory, buffers, local ports), by operation (accept, connect, check) and errno; never counted against a backend.",
		}, []string{"balancer", "op", "error"}),
	}
	reg.MustRegister(m.Connections, m.Active, m.BackendActive, m.DialErrors, m.Bytes, m.Up, m.Ejections, m.Requests, m.Duration, m.LocalErrors)
	return m
}

// BackendMetrics are one backend's series, resolved once so the hot paths
// never hash label values.
type BackendMetrics struct {
	Conns, dialErrors, ejections prometheus.Counter
	ToBackend, ToClient          prometheus.Counter
	Active, up                   prometheus.Gauge
	Duration                     prometheus.Observer

	vec          *prometheus.CounterVec
	labels       [2]string
	codes        [600]atomic.Pointer[prometheus.Counter]
	otherCodeCtr atomic.Pointer[prometheus.Counter]
}

func (m *Metrics) ForBackend(lbName, beName string) *BackendMetrics {
	return &BackendMetrics{
		Conns:      m.Connections.WithLabelValues(lbName, beName),
		dialErrors: m.DialErrors.WithLabelValues(lbName, beName),
		ejections:  m.Ejections.WithLabelValues(lbName, beName),
		ToBackend:  m.Bytes.WithLabelValues(lbName, beName, DirToBackend),
		ToClient:   m.Bytes.WithLabelValues(lbName, beName, DirToClient),
		Active:     m.BackendActive.WithLabelValues(lbName, beName),
		up:         m.Up.WithLabelValues(lbName, beName),
		Duration:   m.Duration.WithLabelValues(lbName, beName),
		vec:        m.Requests,
		labels:     [2]string{lbName, beName},
	}
}

// ForNone is the series of http answers no backend gave.
func (m *Metrics) ForNone(lbName string) *BackendMetrics {
	return &BackendMetrics{
		vec:    m.Requests,
		labels: [2]string{lbName, BackendNone},
	}
}

// Forget removes a backend's gauges once it is no longer configured, so a
// removed backend does not linger as up. Counters stay: rates over them
// stay right.
func (m *Metrics) Forget(lbName, beName string) {
	m.BackendActive.DeleteLabelValues(lbName, beName)
	m.Up.DeleteLabelValues(lbName, beName)
}

// Request counts one HTTP answer by code, caching the series per code.
func (bm *BackendMetrics) Request(code int) {
	slot, label := &bm.otherCodeCtr, "other"
	if code >= 100 && code < len(bm.codes) {
		slot = &bm.codes[code]
	}
	if c := slot.Load(); c != nil {
		(*c).Inc()
		return
	}
	if slot != &bm.otherCodeCtr {
		label = strconv.Itoa(code)
	}
	c := bm.vec.WithLabelValues(bm.labels[0], bm.labels[1], label)
	slot.Store(&c)
	c.Inc()
}

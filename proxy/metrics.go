package proxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/h2proxy/h2proxy/tunnel"
)

// metrics are the Prometheus series the proxy exports on the admin
// listener's /metrics.
type metrics struct {
	reg           *prometheus.Registry
	activeTunnels *prometheus.GaugeVec
	tunnels       *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	durations     *prometheus.HistogramVec
	denials       *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
	h2Conns       prometheus.Gauge
	h2Streams     prometheus.Gauge
	tlsErrors     prometheus.Counter
}

func newMetrics(certExpiry func() map[string]time.Time) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		activeTunnels: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "h2proxy_tunnels_active", Help: "Open tunnels, by client protocol (h1, h2) and kind (tunnel, websocket).",
		}, []string{"proto", "kind"}),
		tunnels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "h2proxy_tunnels_total", Help: "Tunnels ended, by outcome (ok, refused, client_error, target_error, idle, shutdown).",
		}, []string{"outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "h2proxy_bytes_total", Help: "Payload bytes relayed, by direction (up: client to target, down: target to client).",
		}, []string{"direction"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "h2proxy_request_duration_seconds", Help: "Duration of requests and tunnels, by kind.",
			Buckets: []float64{.005, .025, .1, .5, 1, 5, 30, 120, 600, 3600},
		}, []string{"kind"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "h2proxy_denials_total", Help: "Requests refused, by Proxy-Status error type.",
		}, []string{"reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "h2proxy_auth_failures_total", Help: "Proxy requests refused for credentials, by reason (missing, invalid, throttled).",
		}, []string{"reason"}),
		h2Conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "h2proxy_h2_connections", Help: "Open HTTP/2 client connections.",
		}),
		h2Streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "h2proxy_h2_streams", Help: "HTTP/2 streams being served.",
		}),
		tlsErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "h2proxy_tls_handshake_errors_total", Help: "Client TLS handshakes that failed or timed out.",
		}),
	}
	m.reg.MustRegister(m.activeTunnels, m.tunnels, m.bytes, m.durations, m.denials, m.authFailures,
		m.h2Conns, m.h2Streams, m.tlsErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if certExpiry != nil {
		m.reg.MustRegister(expiryCollector(certExpiry))
	}
	return m
}

var expiryDesc = prometheus.NewDesc("h2proxy_cert_expiry_timestamp_seconds",
	"When the certificate served for a name expires (Unix time).", []string{"name"}, nil)

// expiryCollector reports the certificate source's expiry times as they
// are when scraped (certificates are renewed and reloaded underneath).
type expiryCollector func() map[string]time.Time

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for name, t := range c() {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(t.Unix()), name)
	}
}

// outcome names how a request or tunnel ended, for h2proxy_tunnels_total.
func outcome(err error) string {
	var pe *Error
	var te *tunnel.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &pe):
		return "refused"
	case errors.Is(err, tunnel.ErrIdle):
		return "idle"
	case errors.Is(err, errShutdown):
		return "shutdown"
	case errors.As(err, &te) && te.Side == tunnel.Target:
		return "target_error"
	case errors.Is(err, context.Canceled), errors.As(err, &te):
		return "client_error"
	}
	return "client_error"
}

// AdminHandler serves /healthz (the process is alive), /readyz (accepting,
// not draining; 503 while draining so load balancers stop sending) and
// /metrics (Prometheus).
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}

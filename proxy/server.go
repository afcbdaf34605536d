package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/h2proxy/h2proxy/h2"
)

// Config configures a Server. Only TLSConfig is required.
type Config struct {
	// TLSConfig supplies the server certificate. The server adds ALPN
	// (h2, http/1.1) and requires TLS 1.2 or later.
	TLSConfig *tls.Config
	// Policy is the destination policy. Its zero value refuses private
	// addresses; Ports defaults to DefaultPorts.
	Policy Policy
	// UpstreamTLS verifies origins for https:// forwarding and wss://.
	// Default: the system roots.
	UpstreamTLS *tls.Config
	// DialTimeout bounds DNS lookup plus connect to a target. Default 10s.
	DialTimeout time.Duration
	// TunnelIdleTimeout closes tunnels that carried nothing either way for
	// this long. Default 0: tunnels live as long as both ends keep them.
	TunnelIdleTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake and reading a request
	// head. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections with no request or tunnel in
	// flight. Default 2m.
	IdleTimeout time.Duration
	// HTTP2 holds the HTTP/2 front-end settings.
	HTTP2 h2.Config
	// Names are host names that address the proxy itself (beside
	// localhost and the machine's addresses), for telling requests to the
	// proxy from requests through it.
	Names []string
	// Logger receives access and error logs. Default: discard.
	Logger *zerolog.Logger
	// ProxyProtocol makes every listener expect a PROXY protocol v1/v2
	// header from a load balancer in TrustedProxies; connections from
	// other addresses are closed. Default off.
	ProxyProtocol bool
	// TrustedProxies are the CIDRs (or single addresses) of load
	// balancers allowed to send PROXY headers.
	TrustedProxies []string
	// CertExpiry, when set, reports when the served certificate expires,
	// for the h2proxy_cert_expiry_timestamp_seconds gauge.
	CertExpiry func() time.Time
}

// Server is an HTTPS forward proxy.
type Server struct {
	cfg       Config
	name      string // in Via and Proxy-Status
	log       zerolog.Logger
	dialer    *dialer
	forwarder http.Handler
	hs        *http.Server
	metrics   *metrics
	own       ownNames

	policy atomic.Pointer[Policy]

	mu      sync.Mutex
	tunnels map[*activeTunnel]struct{}
	closing bool
	wg      sync.WaitGroup
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("proxy: Config.TLSConfig is required")
	}
	if cfg.ProxyProtocol && len(cfg.TrustedProxies) == 0 {
		return nil, errors.New("PROXY protocol needs the trusted proxies' addresses: set --trusted-proxies CIDR,...")
	}
	if cfg.Policy.Ports == nil {
		cfg.Policy.Ports, _ = ParsePorts(DefaultPorts)
	}
	if cfg.UpstreamTLS == nil {
		cfg.UpstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	setDefault(&cfg.DialTimeout, 10*time.Second)
	setDefault(&cfg.ReadHeaderTimeout, 10*time.Second)
	setDefault(&cfg.IdleTimeout, 2*time.Minute)
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = *cfg.Logger
	}
	s := &Server{
		cfg:     cfg,
		name:    "h2proxy",
		log:     log,
		tunnels: make(map[*activeTunnel]struct{}),
		metrics: newMetrics(cfg.CertExpiry),
		own:     ownNames{ports: map[string]bool{}, hosts: map[string]bool{"localhost": true}},
	}
	s.dialer = &dialer{policy: s.Policy, timeout: cfg.DialTimeout}
	s.SetPolicy(cfg.Policy)
	for _, n := range cfg.Names {
		s.own.hosts[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	s.hs = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(zerolog.NewSlogHandler(log), slog.LevelDebug),
		ConnState:         s.connState,
		// No ReadTimeout/WriteTimeout: they would cut long-lived tunnels.
	}
	h2.Configure(s.hs, cfg.HTTP2)
	s.forwarder = s.newForwarder()
	return s, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Serve accepts TLS connections (HTTP/2 and HTTP/1.1 by ALPN) on ln until
// Shutdown, and then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	ln, err := s.listen(ln)
	if err != nil {
		return err
	}
	tcfg := withALPN(s.cfg.TLSConfig)
	if get := tcfg.GetConfigForClient; get != nil {
		tcfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hi)
			if c == nil || err != nil {
				return c, err
			}
			return withALPN(c), nil
		}
	}
	tl := newTLSListener(ln, tcfg, s.cfg.ReadHeaderTimeout, s.handshakeDone, s.handshakeFailed)
	return s.serve(tl)
}

// withALPN returns a copy of cfg offering h2 and http/1.1, ahead of any
// protocol the certificate source needs (acme-tls/1), and TLS 1.2 or later.
func withALPN(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.NextProtos = append([]string{"h2", "http/1.1"}, cfg.NextProtos...)
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// ServePlain accepts cleartext connections on ln: HTTP/1.1, and HTTP/2 with
// prior knowledge (h2c, RFC 9113 §3.3), for a load balancer that
// terminates TLS in front of the proxy.
func (s *Server) ServePlain(ln net.Listener) error {
	ln, err := s.listen(ln)
	if err != nil {
		return err
	}
	return s.serve(ln)
}

// listen records ln's address as one of the proxy's own and adds the PROXY
// protocol layer when configured.
func (s *Server) listen(ln net.Listener) (net.Listener, error) {
	s.own.add(ln.Addr())
	if !s.cfg.ProxyProtocol {
		return ln, nil
	}
	return withProxyProtocol(ln, s.cfg.TrustedProxies, s.cfg.ReadHeaderTimeout)
}

func (s *Server) serve(ln net.Listener) error {
	err := s.hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) handshakeDone(c *tls.Conn) {
	if c.ConnectionState().NegotiatedProtocol == "h2" {
		s.metrics.h2Conns.Inc()
	}
}

func (s *Server) handshakeFailed(c net.Conn, err error) {
	s.metrics.tlsErrors.Inc()
	s.log.Debug().Str("client", c.RemoteAddr().String()).Err(err).Msg("TLS handshake failed")
}

// connState keeps the HTTP/2 connection gauge: net/http reports every
// connection's close, HTTP/2 ones included.
func (s *Server) connState(c net.Conn, state http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok && state == http.StateClosed && tc.ConnectionState().NegotiatedProtocol == "h2" {
		s.metrics.h2Conns.Dec()
	}
}

// Policy returns the destination policy in force.
func (s *Server) Policy() *Policy { return s.policy.Load() }

// SetPolicy replaces the destination policy; requests already past their
// check keep the old one. Used for live reloads.
func (s *Server) SetPolicy(p Policy) {
	if p.Ports == nil {
		p.Ports, _ = ParsePorts(DefaultPorts)
	}
	s.policy.Store(&p)
}

func (s *Server) draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops accepting, asks HTTP/2 clients to go away, and waits for
// open requests and tunnels to finish until ctx is done; then it closes
// what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	err := s.hs.Shutdown(ctx)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for t := range s.tunnels {
			t.cancel(errShutdown)
		}
		s.mu.Unlock()
		<-done
		_ = s.hs.Close()
	}
	return err
}

var errShutdown = errors.New("proxy shutting down")

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		s.metrics.h2Streams.Inc()
		defer s.metrics.h2Streams.Dec()
	}
	switch {
	case r.Method == http.MethodConnect && h2.Protocol(r) != "":
		s.serveExtendedConnect(w, r)
	case r.Method == http.MethodConnect:
		s.serveConnect(w, r)
	case s.isProxyRequest(r):
		s.serveForward(w, r)
	default:
		s.serveLocal(w, r)
	}
}

// isProxyRequest tells a request through the proxy from one to it: HTTP/1.1
// proxy requests use the absolute form (RFC 9112 §3.2.2); over HTTP/2 the
// :authority names a foreign host (that is how Chrome sends http:// URLs).
func (s *Server) isProxyRequest(r *http.Request) bool {
	if r.ProtoMajor == 1 && !r.URL.IsAbs() {
		return false
	}
	host := r.Host
	if r.URL.IsAbs() {
		host = r.URL.Host
	}
	return !s.own.match(host)
}

func (s *Server) serveExtendedConnect(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	e := &Error{Status: http.StatusNotImplemented, Type: "http_request_error",
		Detail: "extended CONNECT :protocol " + strconv.Quote(h2.Protocol(r)) + " is not supported yet"}
	s.refuse(w, r, e)
	s.access(r, "websocket", r.Host, e.Status, 0, 0, start, e)
}

// serveLocal answers requests addressed to the proxy itself with a small
// page, never by forwarding them (that would loop).
func (s *Server) serveLocal(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status := http.StatusOK
	switch {
	case r.URL.Path != "/":
		status = http.StatusNotFound
		http.NotFound(w, r)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		status = http.StatusMethodNotAllowed
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", status)
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "h2proxy is an HTTPS forward proxy. Point a browser at it with --proxy-server=https://HOST:PORT.")
	}
	s.access(r, "local", r.Host, status, 0, 0, start, nil)
}

// ownNames recognises authorities that address the proxy itself: its
// listeners' ports with localhost, the listening addresses (all interface
// addresses for a wildcard listener) or a configured name.
type ownNames struct {
	ports map[string]bool
	hosts map[string]bool
}

// add is called before serving starts, so match needs no lock.
func (o ownNames) add(addr net.Addr) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return
	}
	o.ports[strconv.Itoa(ta.Port)] = true
	if !ta.IP.IsUnspecified() {
		o.hosts[ta.IP.String()] = true
		return
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if in, ok := a.(*net.IPNet); ok {
			o.hosts[in.IP.String()] = true
		}
	}
}

func (o ownNames) match(authority string) bool {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		host, port = strings.Trim(authority, "[]"), ""
	}
	if port != "" && !o.ports[port] {
		return false
	}
	return o.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

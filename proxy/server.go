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
}

// Server is an HTTPS forward proxy.
type Server struct {
	cfg       Config
	name      string // in Via and Proxy-Status
	log       zerolog.Logger
	dialer    *dialer
	forwarder http.Handler
	hs        *http.Server
	own       ownNames

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
		dialer:  &dialer{policy: &cfg.Policy, timeout: cfg.DialTimeout},
		tunnels: make(map[*activeTunnel]struct{}),
	}
	s.hs = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(zerolog.NewSlogHandler(log), slog.LevelDebug),
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

// Serve accepts TLS connections on ln until Shutdown. It returns nil after
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.own = newOwnNames(ln.Addr(), s.cfg.Names)
	tcfg := s.cfg.TLSConfig.Clone()
	if tcfg.MinVersion < tls.VersionTLS12 {
		tcfg.MinVersion = tls.VersionTLS12
	}
	tcfg.NextProtos = []string{"h2", "http/1.1"}
	err := s.hs.Serve(tls.NewListener(ln, tcfg))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
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

// ownNames recognises authorities that address the proxy itself.
type ownNames struct {
	port  string
	hosts map[string]bool
}

func newOwnNames(addr net.Addr, names []string) ownNames {
	o := ownNames{hosts: map[string]bool{"localhost": true}}
	if ta, ok := addr.(*net.TCPAddr); ok {
		o.port = strconv.Itoa(ta.Port)
		if ta.IP.IsUnspecified() {
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if in, ok := a.(*net.IPNet); ok {
					o.hosts[in.IP.String()] = true
				}
			}
		} else {
			o.hosts[ta.IP.String()] = true
		}
	}
	for _, n := range names {
		o.hosts[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	return o
}

func (o ownNames) match(authority string) bool {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		host, port = strings.Trim(authority, "[]"), ""
	}
	if port != "" && port != o.port {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return o.hosts[host]
}

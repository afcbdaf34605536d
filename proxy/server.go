package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/h2proxy/h2proxy/h1"
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
	// Resolver looks up destination names. Default: the system's.
	Resolver *net.Resolver
	// TunnelIdleTimeout closes tunnels that carried nothing either way for
	// this long. Default 0: tunnels live as long as both ends keep them.
	TunnelIdleTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake and reading a request
	// head. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections with no request or tunnel in
	// flight. Default 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head. Default 64 KiB.
	MaxHeaderBytes int
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
	// balancers allowed to send PROXY headers, and whose X-Forwarded-*
	// and Forwarded fields routes pass on.
	TrustedProxies []string
	// Routes make h2proxy the origin for their hosts (gateway mode).
	Routes []Route
	// Users, when set, must authenticate with Proxy-Authorization: Basic.
	// Default nil: no authentication.
	Users *Users
	// UserPolicies replace Policy for the users they name.
	UserPolicies map[string]Policy
	// ProbeResistance answers unauthenticated proxy requests as a plain
	// web server would (never 407), so scanners cannot tell a proxy is
	// here; only requests for ProbeDomain get the 407 that lets a browser
	// ask for credentials. Needs Users. Default off.
	ProbeResistance bool
	ProbeDomain     string
	// MaxTunnelsPerClient caps the open tunnels of one client address
	// (429 past it). Default 0: no cap.
	MaxTunnelsPerClient int
	// CertExpiry, when set, reports when the served certificates expire,
	// by name, for the h2proxy_cert_expiry_timestamp_seconds gauge.
	CertExpiry func() map[string]time.Time
	// HTTPChallenge, when set, wraps the handler of every listener, so an
	// ACME HTTP-01 responder can answer its requests to the proxy itself.
	HTTPChallenge func(http.Handler) http.Handler
}

// Server is an HTTPS forward proxy.
type Server struct {
	cfg     Config
	name    string // in Via and Proxy-Status
	log     zerolog.Logger
	id      string // this instance, in Via for loop detection
	dialer  *dialer
	hs      *http.Server
	metrics *metrics
	own     *ownNames

	policies atomic.Pointer[policySet]
	fwds     sync.Map // *Policy -> *forwarder, one connection pool per policy
	auth     *authenticator
	origins  originProtocols // which WebSocket handshake each origin takes
	routes   atomic.Pointer[map[string]Route]
	gateway  http.Handler
	// trustedNets are TrustedProxies parsed: PROXY protocol senders, and
	// clients whose X-Forwarded-* fields routes keep.
	trustedNets []netip.Prefix

	mu        sync.Mutex
	tunnels   map[*activeTunnel]struct{}
	perClient map[string]int // open tunnels by client address
	closing   bool
	listeners []net.Listener
	wg        sync.WaitGroup
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("proxy: Config.TLSConfig is required")
	}
	if cfg.ProxyProtocol && len(cfg.TrustedProxies) == 0 {
		return nil, errors.New("PROXY protocol needs the trusted proxies' addresses: set --trusted-proxies to the load balancers' CIDRs")
	}
	if cfg.UpstreamTLS == nil {
		cfg.UpstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	setDefault(&cfg.DialTimeout, 10*time.Second)
	setDefault(&cfg.ReadHeaderTimeout, 10*time.Second)
	setDefault(&cfg.IdleTimeout, 2*time.Minute)
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = *cfg.Logger
	}
	s := &Server{
		cfg:       cfg,
		name:      "h2proxy",
		log:       log,
		tunnels:   make(map[*activeTunnel]struct{}),
		perClient: make(map[string]int),
		metrics:   newMetrics(cfg.CertExpiry),
		own:       newOwnNames(),
		id:        instanceID(),
	}
	s.dialer = &dialer{policy: s.policyFrom, self: s.own.self, timeout: cfg.DialTimeout, resolver: cfg.Resolver}
	s.SetPolicy(cfg.Policy, cfg.UserPolicies)
	s.auth = newAuthenticator()
	s.SetUsers(cfg.Users)
	s.SetRoutes(cfg.Routes)
	for _, c := range cfg.TrustedProxies {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			ip, err2 := netip.ParseAddr(c)
			if err2 != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", c, err)
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		s.trustedNets = append(s.trustedNets, p.Masked())
	}
	for _, n := range cfg.Names {
		s.own.addName(n)
	}
	var handler http.Handler = s
	if cfg.HTTPChallenge != nil {
		handler = cfg.HTTPChallenge(handler)
	}
	s.hs = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(zerolog.NewSlogHandler(log), slog.LevelDebug),
		ConnState:         s.connState,
		ConnContext:       h1.ConnContext,
		// OPTIONS * reaches the handler like any request, so that every
		// HTTP/1.1 request consumes its framing verdict (h1.Conflict).
		DisableGeneralOptionsHandler: true,
		// No ReadTimeout/WriteTimeout: they would cut long-lived tunnels.
	}
	h2cfg := cfg.HTTP2
	if h2cfg.Reject == nil {
		// Requests the engine refuses before routing (a malformed
		// :authority, a header list over the limit) get Proxy-Status and an
		// access line like any other refusal.
		h2cfg.Reject = func(w http.ResponseWriter, r *http.Request, status int) {
			s.fail(w, r, kindMalformed, r.Host, time.Now(), &Error{Status: status, Type: "http_request_error", Detail: http.StatusText(status)})
		}
	}
	if h2cfg.Logger == nil {
		h2cfg.Logger = slog.New(zerolog.NewSlogHandler(log))
	}
	h2.Configure(s.hs, h2cfg)
	s.gateway = s.newGateway()
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
		// The source hands out the same *tls.Config until it reloads, so
		// its ALPN copy is made once per config, not once per handshake:
		// a tls.Conn keeps its config for life, and a copy per connection
		// costs every idle tunnel about a kilobyte.
		type alpnCopy struct{ src, out *tls.Config }
		var last atomic.Pointer[alpnCopy]
		tcfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hi)
			if c == nil || err != nil {
				return c, err
			}
			if l := last.Load(); l != nil && l.src == c {
				return l.out, nil
			}
			out := withALPN(c)
			last.Store(&alpnCopy{src: c, out: out})
			return out, nil
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
	return s.serve(watchListener{ln})
}

// listen records ln's address as one of the proxy's own and adds the PROXY
// protocol layer when configured.
func (s *Server) listen(ln net.Listener) (net.Listener, error) {
	s.own.add(ln.Addr())
	s.mu.Lock()
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
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

// policySet is the destination policy in force: the global one and those
// of users who have their own.
type policySet struct {
	global *Policy
	users  map[string]*Policy
}

// SetPolicy replaces the destination policies (global, and per user when
// authentication is on); requests already past their check keep the old
// ones. Used for live reloads.
func (s *Server) SetPolicy(global Policy, users map[string]Policy) {
	set := &policySet{global: withDefaults(global), users: map[string]*Policy{}}
	for name, p := range users {
		set.users[name] = withDefaults(p)
	}
	s.policies.Store(set)
	// Pooled upstream connections were checked under the old policies.
	s.fwds.Range(func(k, v any) bool {
		s.fwds.Delete(k)
		v.(*forwarder).transport.CloseIdleConnections()
		return true
	})
}

func withDefaults(p Policy) *Policy {
	if p.Ports == nil {
		p.Ports, _ = ParsePorts(DefaultPorts)
	}
	return &p
}

// SetUsers replaces the users allowed to use the proxy; nil turns
// authentication off.
func (s *Server) SetUsers(u *Users) { s.auth.setUsers(u) }

type policyKey struct{}

// policyFor returns the policy for an authenticated user ("" when
// authentication is off).
func (s *Server) policyFor(user string) *Policy {
	set := s.policies.Load()
	if p, ok := set.users[user]; ok {
		return p
	}
	return set.global
}

// policyFrom returns the policy a request's context carries.
func (s *Server) policyFrom(ctx context.Context) *Policy {
	if p, ok := ctx.Value(policyKey{}).(*Policy); ok {
		return p
	}
	return s.policies.Load().global
}

func (s *Server) draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Drain starts a graceful stop and returns at once: /readyz turns 503, new
// tunnels are refused and the listeners are closed, so new connections
// are refused by the kernel. Shutdown does the rest.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
}

// Shutdown drains (see Drain), asks HTTP/2 clients to go away (GOAWAY),
// and waits for open requests and tunnels to finish until ctx is done;
// then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	err := s.hs.Shutdown(ctx)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		tunnels := make([]*activeTunnel, 0, len(s.tunnels))
		for t := range s.tunnels {
			tunnels = append(tunnels, t)
		}
		s.mu.Unlock()
		for _, t := range tunnels {
			t.end(errShutdown) // outside s.mu: an ending tunnel's done takes it
		}
		<-done
		_ = s.hs.Close()
	}
	return err
}

var errShutdown = errors.New("proxy shutting down")

// instanceID is a random name for this process, so that it recognises its
// own Via entries.
func instanceID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

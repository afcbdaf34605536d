package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/h2proxy/h2proxy/h1"
	"github.com/h2proxy/h2proxy/h2"
	"github.com/h2proxy/h2proxy/ws"
)

// Request kinds, as logged and counted.
const (
	kindTunnel    = "tunnel"    // CONNECT host:port
	kindWebSocket = "websocket" // extended CONNECT, or an HTTP/1.1 Upgrade
	kindForward   = "forward"   // a request for an http:// or https:// URL
	kindLocal     = "local"     // a request to the proxy itself
	kindRoute     = "route"     // a request for a route's host (gateway mode)
	kindMalformed = "malformed" // refused before it could be routed
)

// growStack grows the calling goroutine's stack to 16 KiB at once. Each
// HTTP/2 stream is handled on a goroutine of its own, which starts with
// the runtime's small stack; routing, the policy check, the dial and the
// answer then grew it three or four times, each time copying a deeper
// stack (measured: 12 % of the proxy's CPU per new tunnel). Grown before
// anything is on it, it is copied once, almost empty: a new tunnel cost
// 4-7 % less CPU, and its p50 fell by about 9 µs. The handler of a tunnel
// returns once the tunnel is spliced (see runTunnel), so an idle tunnel
// does not keep this stack.
//
//go:noinline
func growStack() {
	var frame [12 << 10]byte
	keep(frame[:])
}

// keep makes its argument live, so that growStack's frame is not
// optimised away.
//
//go:noinline
func keep([]byte) {}

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		growStack()
		s.metrics.h2Streams.Inc()
		defer s.metrics.h2Streams.Dec()
	}
	if r.ProtoMajor == 1 && h1.Conflict(r) {
		// RFC 9112 §6.1: both framings at once is a smuggling attempt;
		// refuse it and close the connection rather than pick one.
		s.fail(w, r, kindMalformed, requestTarget(r), time.Now(), errBadRequest("both Content-Length and Transfer-Encoding"))
		return
	}
	if rt, ok := s.routeFor(r); ok && !(r.Method == http.MethodConnect && h2.Protocol(r) == "") {
		s.serveRoute(w, r, rt)
		return
	}
	kind := s.kindOf(r)
	if kind == kindLocal {
		s.serveLocal(w, r)
		return
	}
	r, ok := s.admit(w, r, kind)
	if !ok {
		return
	}
	switch kind {
	case kindWebSocket:
		s.serveProxyWebSocket(w, r)
	case kindTunnel:
		s.serveConnect(w, r)
	default:
		s.serveForward(w, r)
	}
}

func (s *Server) kindOf(r *http.Request) string {
	switch {
	case r.Method == http.MethodConnect && h2.Protocol(r) != "":
		return kindWebSocket
	case r.Method == http.MethodConnect:
		return kindTunnel
	case !s.isProxyRequest(r):
		return kindLocal
	case r.ProtoMajor == 1 && ws.IsUpgrade(r.Header):
		return kindWebSocket
	}
	return kindForward
}

// admit applies what every proxy request must pass before routing:
// authentication (with probe resistance), loop detection and the request's
// destination policy, which it puts in the returned request's context.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, kind string) (*http.Request, bool) {
	start := time.Now()
	target := requestTarget(r)
	if h := r.Header.Get("Host"); r.ProtoMajor == 2 && h != "" && !strings.EqualFold(h, r.Host) {
		// RFC 9113 §8.3.1: a Host field must agree with :authority; one
		// that does not is an attempt to have two targets read differently.
		s.fail(w, r, kind, target, start, errBadRequest("Host field conflicts with :authority"))
		return nil, false
	}
	if s.looped(r) {
		s.fail(w, r, kind, target, start, &Error{Status: http.StatusLoopDetected, Type: "proxy_loop_detected", Detail: "request already passed this proxy (Via)"})
		return nil, false
	}
	user := ""
	if s.auth.enabled() {
		var res authResult
		user, res = s.auth.check(r)
		if res != authOK {
			s.refuseAuth(w, r, kind, target, start, res)
			return nil, false
		}
		if s.isProbeDomain(target) {
			// The browser asked for the secret domain to log in; it has.
			s.serveLocal(w, r)
			return nil, false
		}
	}
	ctx := context.WithValue(r.Context(), policyKey{}, s.policyFor(user))
	ctx = context.WithValue(ctx, userKey{}, user)
	return r.WithContext(ctx), true
}

type userKey struct{}

// refuseAuth answers a request without valid credentials: 407 asking for
// them (RFC 9110 §15.5.8), 429 for a client that guessed wrong too often,
// or, with probe resistance, what a plain web server would answer.
func (s *Server) refuseAuth(w http.ResponseWriter, r *http.Request, kind, target string, start time.Time, res authResult) {
	reason := map[authResult]string{authMissing: "missing", authInvalid: "invalid", authThrottled: "throttled"}[res]
	s.metrics.authFailures.WithLabelValues(reason).Inc()
	if s.cfg.ProbeResistance && res != authThrottled && !s.isProbeDomain(target) {
		s.serveLocal(w, r)
		return
	}
	if res == authThrottled {
		w.Header().Set("Retry-After", "60")
		s.fail(w, r, kind, target, start, &Error{Status: http.StatusTooManyRequests, Type: "http_request_denied", Detail: "too many failed logins from this address"})
		return
	}
	w.Header().Set("Proxy-Authenticate", `Basic realm="h2proxy", charset="UTF-8"`)
	s.fail(w, r, kind, target, start, &Error{Status: http.StatusProxyAuthRequired, Type: "http_request_denied", Detail: "proxy authentication required"})
}

func (s *Server) isProbeDomain(target string) bool {
	if s.cfg.ProbeDomain == "" {
		return false
	}
	host, _ := splitAuthority(target)
	return host == strings.ToLower(strings.TrimSuffix(s.cfg.ProbeDomain, "."))
}

// requestTarget is the authority a proxy request is for.
func requestTarget(r *http.Request) string {
	if r.Method != http.MethodConnect && r.URL.IsAbs() {
		return r.URL.Host
	}
	return r.Host
}

// isProxyRequest tells a request through the proxy from one to it: HTTP/1.1
// proxy requests use the absolute form (RFC 9112 §3.2.2); over HTTP/2 the
// :authority names a foreign host (that is how Chrome sends http:// URLs).
func (s *Server) isProxyRequest(r *http.Request) bool {
	if r.ProtoMajor == 1 && !r.URL.IsAbs() {
		return false
	}
	return !s.own.match(requestTarget(r))
}

// serveLocal answers requests addressed to the proxy itself with a small
// page, never by forwarding them (that would loop). With probe resistance
// it is also the answer to unauthenticated proxy requests, so it must look
// like any small web server's: no proxy headers.
func (s *Server) serveLocal(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Read a (small) request body before answering, as a web server
	// would, so that its frames never meet a closed stream. A CONNECT's
	// body is a tunnel that never ends: leave it.
	if r.Method != http.MethodConnect {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	}
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
	s.access(r, kindLocal, r.Host, status, 0, 0, start, nil)
}

// ownNames recognises authorities that address the proxy itself: its
// listeners' ports with localhost, the listening addresses (all interface
// addresses for a wildcard listener) or a configured name. Listeners are
// added while others already serve (Serve and ServePlain run side by
// side), hence the lock.
type ownNames struct {
	mu    sync.RWMutex
	ports map[string]bool
	hosts map[string]bool
	addrs map[netip.AddrPort]bool // listening addresses, a wildcard one as such
}

func newOwnNames() *ownNames {
	return &ownNames{ports: map[string]bool{}, hosts: map[string]bool{"localhost": true}, addrs: map[netip.AddrPort]bool{}}
}

// add records a listening address.
func (o *ownNames) add(addr net.Addr) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return
	}
	var hosts []string
	if ta.IP.IsUnspecified() {
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if in, ok := a.(*net.IPNet); ok {
				hosts = append(hosts, in.IP.String())
			}
		}
	} else {
		hosts = append(hosts, ta.IP.String())
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ports[strconv.Itoa(ta.Port)] = true
	for _, h := range hosts {
		o.hosts[h] = true
	}
	ap := ta.AddrPort()
	o.addrs[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
}

// addName records a name the proxy is reached by (its certificate names).
func (o *ownNames) addName(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hosts[strings.ToLower(strings.TrimSuffix(name, "."))] = true
}

// self reports whether dialling ap would reach one of the proxy's own
// listeners (a loop): one of its ports on one of its addresses.
//
// A listener on one address takes only connections to that address: one
// on 127.0.0.1 is not reached through 127.0.0.2, another loopback address
// that another server may listen on. A wildcard listener takes them on
// every address of the host. Connecting to the unspecified address
// reaches the host itself, as its loopback address would.
func (o *ownNames) self(ap netip.AddrPort) bool {
	ip, port := ap.Addr().Unmap(), ap.Port()
	switch {
	case ip == netip.IPv4Unspecified():
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case ip == netip.IPv6Unspecified():
		ip = netip.IPv6Loopback()
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.addrs[netip.AddrPortFrom(ip, port)] {
		return true
	}
	wild := o.addrs[netip.AddrPortFrom(netip.IPv4Unspecified(), port)] ||
		o.addrs[netip.AddrPortFrom(netip.IPv6Unspecified(), port)]
	return wild && (ip.IsLoopback() || o.hosts[ip.String()])
}

func (o *ownNames) match(authority string) bool {
	host, port := splitAuthority(authority)
	o.mu.RLock()
	defer o.mu.RUnlock()
	return (port == "" || o.ports[port]) && o.hosts[host]
}

// hasPort reports whether one of the proxy's listeners has port.
func (o *ownNames) hasPort(port string) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.ports[port]
}

// splitAuthority splits host[:port] for comparing names: the host comes
// lower-case, without brackets or a trailing dot; port is "" when absent.
func splitAuthority(authority string) (host, port string) {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		host, port = strings.Trim(authority, "[]"), ""
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port
}

package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/h2proxy/h2proxy/ws"
)

// Route sends requests addressed to Host to Backend: h2proxy as the
// origin a browser talks to (gateway mode), WebSockets included.
type Route struct {
	Host    string   // lower-case host name, no port
	Backend *url.URL // http:// or https://, with an optional path prefix
}

// ParseRoute parses HOST=URL.
func ParseRoute(s string) (Route, error) {
	host, raw, ok := strings.Cut(s, "=")
	host = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(host), "."))
	if !ok || !validHostname(host) {
		return Route{}, fmt.Errorf("route %q: want HOST=URL, e.g. app.example.com=http://127.0.0.1:8080", s)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Route{}, fmt.Errorf("route %q: backend must be an http:// or https:// URL with a host (and optionally a path)", s)
	}
	return Route{Host: host, Backend: u}, nil
}

// routePolicy lets routes reach the backends the operator configured,
// private addresses included; only the loop check stays.
var routePolicy = &Policy{AllowPrivate: true, Ports: PortSet{{1, 65535}}}

// SetRoutes replaces the routes (live reload).
func (s *Server) SetRoutes(routes []Route) {
	m := make(map[string]Route, len(routes))
	for _, r := range routes {
		m[r.Host] = r
	}
	s.routes.Store(&m)
}

// routeFor returns the route for a request addressed to one of the route
// hosts, on a port of ours or none.
func (s *Server) routeFor(r *http.Request) (Route, bool) {
	host, port := splitAuthority(requestTarget(r))
	if port != "" && !s.own.hasPort(port) {
		return Route{}, false
	}
	rt, ok := (*s.routes.Load())[host]
	return rt, ok
}

// serveRoute reverse-proxies a request addressed to a route host.
func (s *Server) serveRoute(w http.ResponseWriter, r *http.Request, rt Route) {
	start := time.Now()
	r = r.WithContext(context.WithValue(r.Context(), policyKey{}, routePolicy))
	if r.Method == http.MethodConnect || ws.IsUpgrade(r.Header) {
		wt := wsTarget{scheme: rt.Backend.Scheme, path: joinPath(rt.Backend.Path, r.URL.RequestURI()), extra: s.forwardedFor(r, r.Header)}
		var perr *Error
		if wt.t, perr = parseAuthority(rt.Backend.Host, defaultPort(wt.scheme)); perr != nil {
			s.fail(w, r, kindRoute, rt.Host, start, perr)
			return
		}
		s.serveWebSocket(w, r, wt, start)
		return
	}
	r.Header.Del("Upgrade")
	r.Header.Del("HTTP2-Settings")
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	fi := &forwardInfo{}
	s.gateway.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), forwardKey{}, fi)))
	var err error
	if fi.err != nil {
		err = fi.err
	}
	s.access(r, kindRoute, rt.Backend.String(), cw.status, 0, cw.n, start, err)
}

func joinPath(prefix, reqURI string) string {
	if prefix == "" || prefix == "/" {
		return reqURI
	}
	return strings.TrimSuffix(prefix, "/") + reqURI
}

// newGateway builds the reverse proxy for routes.
func (s *Server) newGateway() http.Handler {
	f := s.newForwarder()
	rp := f.Handler.(*httputil.ReverseProxy)
	rp.Rewrite = func(pr *httputil.ProxyRequest) {
		rt, _ := s.routeFor(pr.In)
		pr.SetURL(rt.Backend)
		pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
		for k, v := range s.forwardedFor(pr.In, pr.In.Header) {
			pr.Out.Header[k] = v
		}
		pr.Out.Header.Add("Via", s.via(pr.In))
	}
	return rp
}

// forwardedFor returns the X-Forwarded-For/-Proto and Forwarded (RFC 7239)
// fields for a request to a backend. What a client sent is kept (and
// extended) only when the client is a trusted proxy; anyone else could
// forge them.
func (s *Server) forwardedFor(r *http.Request, in http.Header) http.Header {
	client := clientIP(r)
	proto := "https"
	if r.TLS == nil {
		proto = "http"
	}
	out := http.Header{}
	if s.trusted(client) {
		if v := in.Values("X-Forwarded-For"); len(v) > 0 {
			out["X-Forwarded-For"] = []string{strings.Join(v, ", ") + ", " + client}
		}
		if v := in.Get("X-Forwarded-Proto"); v == "http" || v == "https" {
			proto = v
		}
		if v := in.Values("Forwarded"); len(v) > 0 {
			out["Forwarded"] = v
		}
	}
	if out.Get("X-Forwarded-For") == "" {
		out.Set("X-Forwarded-For", client)
	}
	out.Set("X-Forwarded-Proto", proto)
	node := client
	if ip, err := netip.ParseAddr(client); err == nil && ip.Is6() {
		node = `"[` + client + `]"`
	}
	out.Add("Forwarded", "for="+node+";proto="+proto+";host="+quoteForwarded(r.Host))
	return out
}

func quoteForwarded(v string) string {
	if strings.ContainsAny(v, ":[]\" ") {
		return `"` + strings.ReplaceAll(v, `"`, "") + `"`
	}
	return v
}

// trusted reports a client address inside TrustedProxies.
func (s *Server) trusted(client string) bool {
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return false
	}
	for _, p := range s.trustedNets {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

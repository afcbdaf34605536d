package h2

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"

	"github.com/h2proxy/h2proxy/tunnel"
)

// Configure makes srv serve HTTP/2 with the native engine, beside
// HTTP/1.1: on TLS connections that negotiated "h2" by ALPN, and on
// cleartext connections that open with the HTTP/2 preface (h2c with prior
// knowledge, RFC 9113 §3.3). net/http's own HTTP/2 server is never set up:
// it stays out whenever TLSNextProto already holds "h2".
//
// srv.Protocols enables HTTP/2 (and unencrypted HTTP/2) so that net/http
// keeps "h2" in the ALPN list of ServeTLS and hands h2c connections over;
// both hand-offs go to this engine. Without cfg.MaxHeaderListSize,
// srv.MaxHeaderBytes bounds the HTTP/2 header list too. srv.Shutdown starts a graceful GOAWAY
// drain on every HTTP/2 connection and waits for them to close.
func Configure(srv *http.Server, cfg Config) {
	if cfg.MaxHeaderListSize <= 0 && srv.MaxHeaderBytes > 0 {
		// One limit for a request head, whichever protocol carries it
		// (as net/http's own HTTP/2 server does).
		cfg.MaxHeaderListSize = srv.MaxHeaderBytes
	}
	s := NewServer(cfg)
	if srv.TLSNextProto == nil {
		srv.TLSNextProto = make(map[string]func(*http.Server, *tls.Conn, http.Handler))
	}
	srv.TLSNextProto["h2"] = func(_ *http.Server, c *tls.Conn, h http.Handler) {
		_ = s.ServeConn(c, h)
	}
	// net/http passes a cleartext connection, its preface already read,
	// wrapped in a *tls.Conn whose NetConn exposes the real one.
	srv.TLSNextProto["unencrypted_http2"] = func(_ *http.Server, c *tls.Conn, h http.Handler) {
		u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			return
		}
		_ = s.serveConn(u.UnencryptedNetConn(), h, true)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = p
	if srv.TLSConfig != nil && !slices.Contains(srv.TLSConfig.NextProtos, "h2") {
		srv.TLSConfig.NextProtos = append([]string{"h2"}, srv.TLSConfig.NextProtos...)
	}
	srv.RegisterOnShutdown(s.goAwayAll)
}

// Is reports whether r arrived over HTTP/2.
func Is(r *http.Request) bool { return r.ProtoMajor == 2 }

// Protocol returns the :protocol pseudo-header of an extended CONNECT
// (RFC 8441 §4), or "".
func Protocol(r *http.Request) string {
	if v := r.Header[":protocol"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Accept answers the CONNECT stream r with 200 and hdr and returns the stream
// as one end of a tunnel: DATA frames in both directions (RFC 9113 §8.5).
// When the handler returns, the tunnel is closed, unless it was detached
// (Detach). w must come from this package's engine.
func Accept(w http.ResponseWriter, r *http.Request, hdr http.Header) (tunnel.Conn, error) {
	if t, ok := w.(interface {
		acceptTunnel(http.Header) (tunnel.Conn, error)
	}); ok {
		return t.acceptTunnel(hdr)
	}
	return nil, errors.New("h2: Accept on a request not served by the h2 engine")
}

// Detach lets the handler of an accepted tunnel (Accept) return while the
// tunnel lives on, as a hijacked HTTP/1.1 connection does: the caller then
// must Close or Abort the tunnel, which ends the stream, cancels r's
// context and frees the handler's slot (so MaxConcurrentStreams still
// bounds the goroutines behind a connection's streams). An idle tunnel
// then needs no handler goroutine, whose stack grew with everything the
// handler did before (routing, policy, the dial).
func Detach(w http.ResponseWriter) error {
	if d, ok := w.(interface{ detach() error }); ok {
		return d.detach()
	}
	return errors.New("h2: Detach on a request not served by the h2 engine")
}

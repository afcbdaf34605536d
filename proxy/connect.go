package proxy

import (
	"context"
	"net/http"
	"time"

	"github.com/h2proxy/h2proxy/h1"
	"github.com/h2proxy/h2proxy/h2"
	"github.com/h2proxy/h2proxy/tunnel"
)

// activeTunnel is a tunnel known to Shutdown, which cancels it when the
// drain deadline passes (net/http does not track hijacked connections).
type activeTunnel struct {
	cancel context.CancelCauseFunc
}

// track registers a tunnel; the returned context is cancelled at the drain
// deadline. It returns false when the server is shutting down.
func (s *Server) track(r *http.Request, kind string) (context.Context, func(), bool) {
	ctx, cancel := context.WithCancelCause(r.Context())
	active := s.metrics.activeTunnels.WithLabelValues(protoLabel(r), kind)
	t := &activeTunnel{cancel: cancel}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		cancel(errShutdown)
		return nil, nil, false
	}
	s.tunnels[t] = struct{}{}
	s.wg.Add(1)
	active.Inc()
	return ctx, func() {
		active.Dec()
		cancel(nil)
		s.mu.Lock()
		delete(s.tunnels, t)
		s.mu.Unlock()
		s.wg.Done()
	}, true
}

// serveConnect handles CONNECT host:port on HTTP/1.1 (RFC 9110 §9.3.6) and
// HTTP/2 (RFC 9113 §8.5): dial, answer 200, splice.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	authority := r.Host
	t, perr := parseAuthority(authority, 0)
	if perr != nil {
		s.fail(w, r, "tunnel", authority, start, perr)
		return
	}
	// The tunnel outlives nothing but its client: detach from the request
	// context only through track's cancel, which Shutdown uses.
	ctx, done, ok := s.track(r, "tunnel")
	if !ok {
		s.fail(w, r, "tunnel", authority, start, &Error{Status: http.StatusServiceUnavailable, Type: "proxy_internal_error", Detail: "shutting down"})
		return
	}
	defer done()

	tc, err := s.dialer.dial(ctx, t)
	if err != nil {
		s.fail(w, r, "tunnel", authority, start, asError(err))
		return
	}
	target := tunnel.NetConn(tc, nil)

	var client tunnel.Conn
	if r.ProtoMajor == 1 {
		client, err = h1.AcceptConnect(w)
	} else {
		client, err = h2.Accept(w, r, nil)
	}
	if err != nil {
		target.Abort(err)
		s.access(r, "tunnel", authority, http.StatusOK, 0, 0, start, err)
		return
	}
	st, err := tunnel.Splice(ctx, client, target, tunnel.Options{IdleTimeout: s.cfg.TunnelIdleTimeout})
	s.access(r, "tunnel", authority, http.StatusOK, st.Up, st.Down, start, err)
	h2.Finish(client)
}

func protoLabel(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "h2"
	}
	return "h1"
}

// fail refuses r with e and logs it.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, kind, target string, start time.Time, e *Error) {
	s.refuse(w, r, e)
	s.access(r, kind, target, e.Status, 0, 0, start, e)
}

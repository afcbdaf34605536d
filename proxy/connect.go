package proxy

import (
	"context"
	"fmt"
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
// deadline. It refuses while the server shuts down (503) and past the
// per-client cap (429). The context derives from parent (r's context, or
// one without its cancellation for a tunnel that outlives ServeHTTP).
func (s *Server) track(parent context.Context, r *http.Request, kind string) (context.Context, func(), *Error) {
	client := clientIP(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, nil, &Error{Status: http.StatusServiceUnavailable, Type: "proxy_internal_error", Detail: "shutting down"}
	}
	if max := s.cfg.MaxTunnelsPerClient; max > 0 && s.perClient[client] >= max {
		return nil, nil, &Error{Status: http.StatusTooManyRequests, Type: "connection_limit_reached",
			Detail: fmt.Sprintf("at most %d open tunnels per client", max)}
	}
	ctx, cancel := context.WithCancelCause(parent)
	t := &activeTunnel{cancel: cancel}
	active := s.metrics.activeTunnels.WithLabelValues(protoLabel(r), kind)
	s.tunnels[t] = struct{}{}
	s.perClient[client]++
	s.wg.Add(1)
	active.Inc()
	return ctx, func() {
		active.Dec()
		cancel(nil)
		s.mu.Lock()
		delete(s.tunnels, t)
		if s.perClient[client]--; s.perClient[client] <= 0 {
			delete(s.perClient, client)
		}
		s.mu.Unlock()
		s.wg.Done()
	}, nil
}

// serveConnect handles CONNECT host:port on HTTP/1.1 (RFC 9110 §9.3.6) and
// HTTP/2 (RFC 9113 §8.5): dial, answer 200, splice.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	authority := r.Host
	t, perr := parseAuthority(authority, 0)
	if perr != nil {
		s.fail(w, r, kindTunnel, authority, start, perr)
		return
	}
	if s.own.match(authority) {
		s.fail(w, r, kindTunnel, authority, start, &Error{Status: http.StatusLoopDetected, Type: "proxy_loop_detected", Detail: "CONNECT to the proxy itself"})
		return
	}
	parent := r.Context()
	if r.ProtoMajor == 1 {
		// net/http cancels an HTTP/1.1 request's context when ServeHTTP
		// returns, and the hijacked tunnel below is spliced after that: it
		// keeps the values it needs but not the cancellation.
		parent = tunnelValues(parent)
	}
	ctx, done, terr := s.track(parent, r, kindTunnel)
	if terr != nil {
		s.fail(w, r, kindTunnel, authority, start, terr)
		return
	}
	detached := false
	defer func() {
		if !detached {
			done()
		}
	}()

	dialCtx := ctx
	if r.ProtoMajor == 1 {
		// The tunnel's context outlives ServeHTTP (see track); the dial
		// still ends when the client leaves before the answer.
		var cancel context.CancelCauseFunc
		dialCtx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		defer context.AfterFunc(r.Context(), func() { cancel(context.Cause(r.Context())) })()
	}
	tc, err := s.dialer.dial(dialCtx, t)
	if err != nil {
		s.fail(w, r, kindTunnel, authority, start, asError(err))
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
		s.access(r, kindTunnel, authority, http.StatusOK, 0, 0, start, err)
		return
	}
	detached = true
	s.runTunnel(ctx, w, r, client, target, done, func(r *http.Request, st tunnel.Stats, err error) {
		s.access(r, kindTunnel, authority, http.StatusOK, st.Up, st.Down, start, err)
	})
}

// runTunnel splices client and target and returns without waiting for the
// end (tunnel.Go), so that an idle tunnel holds neither the handler's
// goroutine, whose stack routing, policy and dials grew, nor (HTTP/1.1)
// net/http's per-connection state: the hijacked connection is ours, and
// an h2 stream is detached from its handler. logEnd writes the tunnel's
// access line, with a request holding only what access reads of r; done
// (see track) runs last.
func (s *Server) runTunnel(ctx context.Context, w http.ResponseWriter, r *http.Request, client, target tunnel.Conn, done func(), logEnd func(*http.Request, tunnel.Stats, error)) {
	opt := tunnel.Options{IdleTimeout: s.cfg.TunnelIdleTimeout}
	if r.ProtoMajor == 2 {
		if err := h2.Detach(w); err != nil {
			// Not the native engine: the handler must stay.
			st, err := tunnel.Splice(ctx, client, target, opt)
			logEnd(r, st, err)
			done()
			return
		}
		s.metrics.h2Streams.Inc() // ServeHTTP's count ends when it returns
	}
	method, proto, major, remote := r.Method, r.Proto, r.ProtoMajor, r.RemoteAddr
	tunnel.Go(ctx, client, target, opt, func(st tunnel.Stats, err error) {
		logEnd((&http.Request{Method: method, Proto: proto, RemoteAddr: remote}).WithContext(ctx), st, err)
		if major == 2 {
			s.metrics.h2Streams.Dec()
		}
		done()
	})
}

// tunnelValues returns a context holding only what a tunnel reads from
// its request's: the policy its dial follows and the user its access line
// names. The request's own context chain holds net/http's connection
// state, which an HTTP/1.1 tunnel outlives and need not keep (about a
// kilobyte per idle tunnel).
func tunnelValues(ctx context.Context) context.Context {
	t := context.Background()
	if p, ok := ctx.Value(policyKey{}).(*Policy); ok {
		t = context.WithValue(t, policyKey{}, p)
	}
	if user, ok := ctx.Value(userKey{}).(string); ok {
		t = context.WithValue(t, userKey{}, user)
	}
	return t
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

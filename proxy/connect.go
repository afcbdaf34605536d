package proxy

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/h2proxy/h2proxy/h1"
	"github.com/h2proxy/h2proxy/h2"
	"github.com/h2proxy/h2proxy/tunnel"
)

// activeTunnel is a tunnel known to Shutdown, which ends it when the
// drain deadline passes (net/http does not track hijacked connections):
// while it dials by cancelling the dial's context, once it is spliced by
// aborting it. Its context is let go once spliced: an idle tunnel need
// not keep a cancellable context and what watching it costs.
type activeTunnel struct {
	s      *Server
	client string
	active prometheus.Gauge
	// parent is the context the spliced tunnel keeps: r's, or for
	// HTTP/1.1, which ServeHTTP's return cancels, only its values.
	parent context.Context

	mu     sync.Mutex
	cancel context.CancelCauseFunc // until spliced
	abort  func(error)             // once spliced
	ended  error                   // why Shutdown ended it
}

// track registers a tunnel; the returned context, for its dial, derives
// from the tunnel's parent and is cancelled at the drain deadline. It
// refuses while the server shuts down (503) and past the per-client cap
// (429).
func (s *Server) track(r *http.Request, kind string) (context.Context, *activeTunnel, *Error) {
	client := clientIP(r)
	parent := r.Context()
	if r.ProtoMajor == 1 {
		// net/http cancels an HTTP/1.1 request's context when ServeHTTP
		// returns, and a hijacked tunnel is spliced after that: it keeps
		// the values it needs but not the cancellation.
		parent = tunnelValues(parent)
	}
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
	t := &activeTunnel{s: s, client: client, parent: parent, cancel: cancel,
		active: s.metrics.activeTunnels.WithLabelValues(protoLabel(r), kind)}
	s.tunnels[t] = struct{}{}
	s.perClient[client]++
	s.wg.Add(1)
	t.active.Inc()
	return ctx, t, nil
}

// end ends the tunnel for Shutdown.
func (t *activeTunnel) end(err error) {
	t.mu.Lock()
	t.ended = err
	cancel, abort := t.cancel, t.abort
	t.mu.Unlock()
	if abort != nil {
		abort(err)
	} else if cancel != nil {
		cancel(err)
	}
}

// spliced hands ending the tunnel over from the dial's context to abort.
func (t *activeTunnel) spliced(abort func(error)) {
	t.mu.Lock()
	cancel, err := t.cancel, t.ended
	t.cancel, t.abort = nil, abort
	t.mu.Unlock()
	if cancel != nil {
		cancel(nil)
	}
	if err != nil {
		abort(err) // Shutdown came first
	}
}

// done unregisters the tunnel, once it (or the attempt) is over.
func (t *activeTunnel) done() {
	t.mu.Lock()
	cancel := t.cancel
	t.cancel = nil
	t.mu.Unlock()
	if cancel != nil {
		cancel(nil)
	}
	t.active.Dec()
	s := t.s
	s.mu.Lock()
	delete(s.tunnels, t)
	if s.perClient[t.client]--; s.perClient[t.client] <= 0 {
		delete(s.perClient, t.client)
	}
	s.mu.Unlock()
	s.wg.Done()
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
	ctx, at, terr := s.track(r, kindTunnel)
	if terr != nil {
		s.fail(w, r, kindTunnel, authority, start, terr)
		return
	}
	detached := false
	defer func() {
		if !detached {
			at.done()
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
	s.runTunnel(ctx, w, r, client, target, at, func(r *http.Request, st tunnel.Stats, err error) {
		s.access(r, kindTunnel, authority, http.StatusOK, st.Up, st.Down, start, err)
	})
}

// runTunnel splices client and target and returns without waiting for the
// end (tunnel.Go), so that an idle tunnel holds neither the handler's
// goroutine, whose stack routing, policy and dials grew, nor (HTTP/1.1)
// net/http's per-connection state: the hijacked connection is ours, and
// an h2 stream is detached from its handler. ctx is at's context; the
// detached tunnel keeps only at's parent. logEnd writes the tunnel's
// access line, with a request holding only what access reads of r; at's
// done runs last.
func (s *Server) runTunnel(ctx context.Context, w http.ResponseWriter, r *http.Request, client, target tunnel.Conn, at *activeTunnel, logEnd func(*http.Request, tunnel.Stats, error)) {
	opt := tunnel.Options{IdleTimeout: s.cfg.TunnelIdleTimeout}
	if r.ProtoMajor == 2 {
		if err := h2.Detach(w); err != nil {
			// Not the native engine: the handler must stay.
			st, err := tunnel.Splice(ctx, client, target, opt)
			logEnd(r, st, err)
			at.done()
			return
		}
		s.metrics.h2Streams.Inc() // ServeHTTP's count ends when it returns
	}
	method, proto, major, remote := r.Method, r.Proto, r.ProtoMajor, r.RemoteAddr
	at.spliced(tunnel.Go(at.parent, client, target, opt, func(st tunnel.Stats, err error) {
		logEnd((&http.Request{Method: method, Proto: proto, RemoteAddr: remote}).WithContext(at.parent), st, err)
		if major == 2 {
			s.metrics.h2Streams.Dec()
		}
		at.done()
	}))
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

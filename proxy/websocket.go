package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/h2proxy/h2proxy/h1"
	"github.com/h2proxy/h2proxy/h2"
	"github.com/h2proxy/h2proxy/tunnel"
	"github.com/h2proxy/h2proxy/ws"
)

// wsTarget is where a WebSocket goes: an origin named by a proxy request,
// or a route's backend (gateway mode).
type wsTarget struct {
	scheme string // "https" for wss, "http" for ws
	t      target
	path   string // request target: path and query
	extra  http.Header
}

func (wt wsTarget) key() string { return wt.scheme + "://" + wt.t.authority() }

// wsOrigin is the origin's side of a WebSocket handshake: a stream on
// success, or a response to relay as it is.
type wsOrigin struct {
	conn   tunnel.Conn
	answer ws.Answer
	resp   *http.Response // not a success: relay status and body, no tunnel
	close  func()         // releases resp's connection
	proto  string         // "h1" (Upgrade) or "h2" (RFC 8441), for the log
}

// originProtocols remembers per origin which handshake it takes, so that
// discovery costs one attempt per origin and ten minutes.
type originProtocols struct {
	mu sync.Mutex
	m  map[string]protoEntry
}

type protoEntry struct {
	h2      bool
	expires time.Time
}

const originMemory = 10 * time.Minute

func (o *originProtocols) get(key string) (h2, known bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.m[key]
	if !ok || time.Now().After(e.expires) {
		return false, false
	}
	return e.h2, true
}

func (o *originProtocols) put(key string, h2 bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil || len(o.m) > 10000 {
		o.m = map[string]protoEntry{}
	}
	o.m[key] = protoEntry{h2: h2, expires: time.Now().Add(originMemory)}
}

// openWebSocket performs the origin side of a WebSocket handshake for
// offer: RFC 8441 when the origin takes it, else an HTTP/1.1 Upgrade
// whose Sec-WebSocket-Accept is verified (RFC 6455 §4.2.2).
func (s *Server) openWebSocket(ctx context.Context, wt wsTarget, offer ws.Offer) (*wsOrigin, error) {
	h2ok, known := s.origins.get(wt.key())
	if h2ok || !known {
		o, err := s.openWebSocketH2(ctx, wt, offer)
		if !errors.Is(err, h2.ErrNoExtendedConnect) {
			if err == nil {
				s.origins.put(wt.key(), true)
			}
			return o, err
		}
	}
	o, err := s.openWebSocketH1(ctx, wt, offer)
	if err == nil {
		// Remembered only once HTTP/1.1 has worked, so that one failed
		// attempt at HTTP/2 cannot pin an origin to the wrong protocol.
		s.origins.put(wt.key(), false)
	}
	return o, err
}

// h2cProbeTimeout bounds trying h2 with prior knowledge on a cleartext
// origin that may only speak HTTP/1.1.
const h2cProbeTimeout = 2 * time.Second

func (s *Server) openWebSocketH2(ctx context.Context, wt wsTarget, offer ws.Offer) (*wsOrigin, error) {
	var conn net.Conn
	var err error
	if wt.scheme == "https" {
		tc, err := s.dialer.dialTLS(ctx, wt.t, s.cfg.UpstreamTLS, []string{"h2", "http/1.1"})
		if err != nil {
			return nil, err
		}
		if tc.ConnectionState().NegotiatedProtocol != "h2" {
			tc.Close()
			return nil, h2.ErrNoExtendedConnect
		}
		conn = tc
	} else if conn, err = s.dialer.dial(ctx, wt.t); err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: wt.scheme, Host: wt.t.authority(), Opaque: wt.path}
	hdr := offer.ConnectHeader()
	copyHeader(hdr, wt.extra)
	resp, stream, err := h2.ExtendedConnect(ctx, conn, u, hdr, h2cProbeTimeout)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if stream == nil {
		return &wsOrigin{resp: resp, close: func() { conn.Close() }, proto: "h2"}, nil
	}
	answer, err := ws.CheckConnectResponse(resp.Header, offer)
	if err != nil {
		stream.Abort(err)
		return nil, &Error{Status: http.StatusBadGateway, Type: "http_response_incomplete", Detail: err.Error()}
	}
	return &wsOrigin{conn: stream, answer: answer, proto: "h2"}, nil
}

func (s *Server) openWebSocketH1(ctx context.Context, wt wsTarget, offer ws.Offer) (*wsOrigin, error) {
	var conn net.Conn
	var err error
	if wt.scheme == "https" {
		conn, err = s.dialer.dialTLS(ctx, wt.t, s.cfg.UpstreamTLS, []string{"http/1.1"})
	} else {
		conn, err = s.dialer.dial(ctx, wt.t)
	}
	if err != nil {
		return nil, err
	}
	// An HTTP/1.1 client's own key goes through untouched; for an HTTP/2
	// client the proxy makes one.
	key := offer.Key
	if key == "" {
		key = ws.NewKey()
	}
	req := &http.Request{
		Method: http.MethodGet, URL: &url.URL{Opaque: wt.path}, Host: wt.t.authority(),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: offer.UpgradeHeader(key),
	}
	copyHeader(req.Header, wt.extra)
	// A client that goes away (or the handshake deadline) must free the
	// origin connection even when the origin never answers.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	resp, stream, err := h1.RoundTrip(conn, req)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	if stream == nil {
		return &wsOrigin{resp: resp, close: func() { conn.Close() }, proto: "h1"}, nil
	}
	answer, err := ws.CheckUpgradeResponse(resp, offer, key)
	if err != nil {
		stream.Abort(err)
		return nil, &Error{Status: http.StatusBadGateway, Type: "http_response_incomplete", Detail: err.Error()}
	}
	return &wsOrigin{conn: stream, answer: answer, proto: "h1"}, nil
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append(dst[k], vs...)
	}
}

// serveWebSocket bridges a client's WebSocket handshake (RFC 8441
// extended CONNECT over HTTP/2, or an HTTP/1.1 Upgrade) to wt, then splices.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, wt wsTarget, start time.Time) {
	target := wt.scheme + "://" + wt.t.authority() + wt.path
	h1Client := r.Method != http.MethodConnect
	offer, err := ws.ParseOffer(r.Header, h1Client)
	if err != nil {
		s.fail(w, r, kindWebSocket, target, start, errBadRequest(err.Error()))
		return
	}
	ctx, at, terr := s.track(r, kindWebSocket)
	if terr != nil {
		s.fail(w, r, kindWebSocket, target, start, terr)
		return
	}
	detached := false
	defer func() {
		if !detached {
			at.done()
		}
	}()
	wt.extra = wt.extra.Clone()
	if wt.extra == nil {
		wt.extra = http.Header{}
	}
	wt.extra.Add("Via", s.via(r)) // RFC 9110 §7.6.3, on the origin's handshake too
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+h2cProbeTimeout)
	// The dial still ends when the client leaves before the answer.
	stop := context.AfterFunc(r.Context(), cancel)
	origin, err := s.openWebSocket(dctx, wt, offer)
	stop()
	cancel()
	if err != nil {
		s.fail(w, r, kindWebSocket, target, start, asError(err))
		return
	}
	if origin.resp != nil {
		defer origin.close()
		s.relayResponse(w, r, origin.resp, target, start)
		return
	}
	var client tunnel.Conn
	if h1Client {
		resp := &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: origin.answer.UpgradeResponseHeader(offer.Key)}
		resp.Header.Add("Via", s.via(r))
		client, err = h1.AcceptUpgrade(w, resp)
	} else {
		client, err = h2.Accept(w, r, origin.answer.ConnectResponseHeader())
	}
	if err != nil {
		origin.conn.Abort(err)
		s.access(r, kindWebSocket, target, http.StatusOK, 0, 0, start, err)
		return
	}
	status := http.StatusOK
	if h1Client {
		status = http.StatusSwitchingProtocols
	}
	detached = true
	s.runTunnel(ctx, w, r, client, origin.conn, at, func(r *http.Request, st tunnel.Stats, err error) {
		s.access(r, kindWebSocket, target, status, st.Up, st.Down, start, err, "origin_proto", origin.proto)
	})
}

// relayResponse passes an origin's refusal of a WebSocket handshake on as
// an ordinary response: status, fields and body, and no tunnel.
func (s *Server) relayResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, target string, start time.Time) {
	defer resp.Body.Close()
	stripHopByHop(resp.Header)
	for k, v := range resp.Header {
		if len(k) > 0 && k[0] != ':' {
			w.Header()[k] = v
		}
	}
	w.Header().Add("Via", s.via(r))
	w.WriteHeader(resp.StatusCode)
	n, err := io.Copy(w, resp.Body)
	s.access(r, kindWebSocket, target, resp.StatusCode, 0, n, start, err)
}

// proxyWebSocketTarget reads where a proxy client's WebSocket goes: the
// :scheme/:authority/:path of an extended CONNECT, or the absolute URL of
// an HTTP/1.1 Upgrade (http/ws, https/wss).
func proxyWebSocketTarget(r *http.Request) (wsTarget, *Error) {
	scheme, authority := r.URL.Scheme, r.Host
	if r.Method != http.MethodConnect {
		authority = r.URL.Host
	}
	switch scheme {
	case "ws", "http":
		scheme = "http"
	case "wss", "https":
		scheme = "https"
	case "":
		// net/http's HTTP/2 server hides :scheme: tell by the port.
		scheme = "http"
		if _, port, _ := net.SplitHostPort(authority); port == "443" {
			scheme = "https"
		}
	default:
		return wsTarget{}, errBadRequest("unsupported WebSocket scheme " + strconv.Quote(scheme))
	}
	t, perr := parseAuthority(authority, defaultPort(scheme))
	if perr != nil {
		return wsTarget{}, perr
	}
	path := r.URL.RequestURI()
	if path == "" || path[0] != '/' {
		path = "/"
	}
	return wsTarget{scheme: scheme, t: t, path: path}, nil
}

// serveProxyWebSocket handles a WebSocket through the proxy.
func (s *Server) serveProxyWebSocket(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	wt, perr := proxyWebSocketTarget(r)
	if perr == nil {
		perr = s.policyFrom(r.Context()).precheck(wt.t)
	}
	if perr != nil {
		s.fail(w, r, kindWebSocket, r.Host, start, perr)
		return
	}
	s.serveWebSocket(w, r, wt, start)
}

package integration

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
)

// This file holds the WebSocket helpers of the websocket_* tests: loopback
// origins that run coder/websocket behind an HTTP/1.1 Upgrade or an RFC 8441
// extended CONNECT, client transports that let coder/websocket's Dial go
// through the proxy either way, and a minimal RFC 6455 frame codec for the
// tests that must see single frames (close handshake, resets). Names carry a
// "ws" prefix so that they cannot clash with other files of the package.

// wsGUID is the fixed string of RFC 6455 §1.3.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsAccept computes Sec-WebSocket-Accept for key (RFC 6455 §4.2.2 item 5.4).
func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// wsNewKey returns a Sec-WebSocket-Key: base64 of 16 random bytes (§4.1).
func wsNewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// ---------------------------------------------------------------------------
// Origins.

// wsOriginConfig describes one loopback WebSocket origin.
type wsOriginConfig struct {
	proto string           // "h1": HTTP/1.1 only; "h2": HTTP/2 only, with RFC 8441
	cert  *tls.Certificate // TLS (wss) when set; cleartext (ws, h2c for "h2") when nil
	// accept configures coder/websocket's side of the handshake
	// (subprotocols, permessage-deflate). nil: defaults, any Origin.
	accept *websocket.AcceptOptions
	// handler, when set, answers every request instead of the echo
	// (refusals, broken handshakes).
	handler http.HandlerFunc
	// plain, when set, answers the requests that are not WebSocket
	// handshakes (a gateway backend's pages).
	plain http.HandlerFunc
	// delayFirst holds the first handshake this long before answering (a
	// slow application behind the origin).
	delayFirst time.Duration
	// session bounds each echo session; zero means 30 s.
	session time.Duration
}

// wsHandshake is one opening handshake as an origin saw it.
type wsHandshake struct {
	method, proto, protocol, uri, host string // protocol: ":protocol" of an extended CONNECT
	header                             http.Header
	answer                             http.Header // the fields the origin answered with
}

// wsEnd is how one echo session at an origin ended.
type wsEnd struct {
	at  time.Time
	err error // from the last Read: a websocket.CloseError after a close handshake
}

// wsOrigin is a running origin: a coder/websocket echo at any path.
type wsOrigin struct {
	addr     string // 127.0.0.1:PORT
	accepted atomic.Int64
	echoed   atomic.Int64
	delayed  atomic.Bool
	ends     chan wsEnd

	mu   sync.Mutex
	seen []wsHandshake
}

// handshakes returns the handshakes the origin saw so far.
func (o *wsOrigin) handshakes() []wsHandshake {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]wsHandshake(nil), o.seen...)
}

// lastHandshake returns the latest handshake, failing the test without one.
func (o *wsOrigin) lastHandshake(t testing.TB) wsHandshake {
	t.Helper()
	hs := o.handshakes()
	if len(hs) == 0 {
		t.Fatalf("origin %s saw no handshake", o.addr)
	}
	return hs[len(hs)-1]
}

// nextEnd waits for an echo session to end.
func (o *wsOrigin) nextEnd(t testing.TB, within time.Duration) wsEnd {
	t.Helper()
	select {
	case e := <-o.ends:
		return e
	case <-time.After(within):
		t.Fatalf("origin %s: the WebSocket was still open after %v", o.addr, within)
		return wsEnd{}
	}
}

// wsCountingListener counts accepted connections, so tests can prove that a
// refused handshake never reached the origin.
type wsCountingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l wsCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startWSOrigin serves cfg on 127.0.0.1:0 until the test ends. Cleanup
// ends every session and waits for its handler, so goleak finds nothing.
func startWSOrigin(t testing.TB, cfg wsOriginConfig) *wsOrigin {
	t.Helper()
	o := &wsOrigin{ends: make(chan wsEnd, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	var handlers sync.WaitGroup
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		if cfg.plain != nil && r.Method != http.MethodConnect && !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			cfg.plain(w, r)
			return
		}
		if cfg.handler != nil {
			o.record(r, w.Header())
			cfg.handler(w, r)
			return
		}
		if cfg.delayFirst > 0 && o.delayed.CompareAndSwap(false, true) {
			select {
			case <-time.After(cfg.delayFirst):
			case <-r.Context().Done():
				return
			}
		}
		o.echo(ctx, w, r, cfg.accept, cmp.Or(cfg.session, 30*time.Second))
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.addr = ln.Addr().String()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: ioTimeout, ErrorLog: log.New(io.Discard, "", 0)}
	srv.Protocols = new(http.Protocols)
	switch {
	case cfg.proto == "h1":
		srv.Protocols.SetHTTP1(true)
	case cfg.cert != nil:
		srv.Protocols.SetHTTP2(true)
	default:
		// h2c with prior knowledge (RFC 9113 §3.3): what the proxy tries
		// first on a ws:// origin.
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	if cfg.cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.cert}}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl := wsCountingListener{Listener: ln, n: &o.accepted}
		if cfg.cert != nil {
			_ = srv.ServeTLS(cl, "", "")
		} else {
			_ = srv.Serve(cl)
		}
	}()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		<-done
		handlers.Wait()
	})
	return o
}

// record notes a handshake as it arrived and the fields it was answered
// with.
func (o *wsOrigin) record(r *http.Request, answer http.Header) {
	hs := wsHandshake{
		method: r.Method, proto: r.Proto, protocol: r.Header.Get(":protocol"),
		uri: r.RequestURI, host: r.Host, header: r.Header.Clone(), answer: answer,
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, hs)
}

// echo accepts a WebSocket with coder/websocket and sends every message
// back. An extended CONNECT (RFC 8441 §4) is presented to the library as
// the HTTP/1.1 handshake it stands for (§5: same fields, minus the key and
// the Upgrade/Connection pair), over the stream instead of a hijacked
// connection.
func (o *wsOrigin) echo(ctx context.Context, w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions, session time.Duration) {
	if opts == nil {
		opts = &websocket.AcceptOptions{}
	}
	cp := *opts
	opts = &cp
	opts.InsecureSkipVerify = true // Origin values are the client's business here

	orig := r
	if r.Method == http.MethodConnect {
		if r.Header.Get(":protocol") != "websocket" {
			http.Error(w, "want :protocol websocket", http.StatusBadRequest)
			return
		}
		up := &wsH2Upgrade{w: w, rc: http.NewResponseController(w), body: r.Body}
		r = r.Clone(ctx)
		r.Method, r.ProtoMajor, r.ProtoMinor = http.MethodGet, 1, 1
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Key", wsNewKey()) // its accept is dropped: §5
		w = up
	}
	c, err := websocket.Accept(w, r, opts)
	// Recorded before the first Read: a test that got an echo back can
	// look at the handshake without racing this.
	o.record(orig, w.Header().Clone())
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	hctx, hcancel := context.WithTimeout(ctx, session)
	defer hcancel()
	for {
		typ, msg, err := c.Read(hctx)
		if err != nil {
			o.ended(err)
			return
		}
		if err := c.Write(hctx, typ, msg); err != nil {
			o.ended(err)
			return
		}
		o.echoed.Add(1)
	}
}

// ended reports how a session ended; beyond what ends buffers (tests that
// look at ends open a few sessions, benchmarks thousands) it is dropped.
func (o *wsOrigin) ended(err error) {
	select {
	case o.ends <- wsEnd{at: time.Now(), err: err}:
	default:
	}
}

// wsH2Upgrade turns coder/websocket's HTTP/1.1 server handshake into the
// RFC 8441 one: the 101 becomes a 200 without Upgrade, Connection and
// Sec-WebSocket-Accept (§5), and "hijacking" yields the stream: the
// request body one way, the flushed response body the other.
type wsH2Upgrade struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	body io.ReadCloser
}

func (u *wsH2Upgrade) Header() http.Header         { return u.w.Header() }
func (u *wsH2Upgrade) Write(b []byte) (int, error) { return u.w.Write(b) }

func (u *wsH2Upgrade) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols {
		h := u.w.Header()
		h.Del("Upgrade")
		h.Del("Connection")
		h.Del("Sec-WebSocket-Accept")
		code = http.StatusOK
	}
	u.w.WriteHeader(code)
	_ = u.rc.Flush()
}

func (u *wsH2Upgrade) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := &wsStreamConn{r: u.body, w: u.w, rc: u.rc}
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

// wsStreamConn is an HTTP/2 server stream as a net.Conn. Every write is
// flushed: net/http holds h2 response data in a buffer until Flush.
type wsStreamConn struct {
	r      io.ReadCloser
	w      io.Writer
	rc     *http.ResponseController
	mu     sync.Mutex
	closed bool
}

func (c *wsStreamConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *wsStreamConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	n, err := c.w.Write(b)
	if err == nil {
		err = c.rc.Flush()
	}
	return n, err
}

// Close unblocks a pending Read; the handler's return then ends the stream
// with END_STREAM.
func (c *wsStreamConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.r.Close()
}

func (c *wsStreamConn) LocalAddr() net.Addr                { return wsStreamAddr{} }
func (c *wsStreamConn) RemoteAddr() net.Addr               { return wsStreamAddr{} }
func (c *wsStreamConn) SetDeadline(t time.Time) error      { return nil }
func (c *wsStreamConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *wsStreamConn) SetWriteDeadline(t time.Time) error { return nil }

type wsStreamAddr struct{}

func (wsStreamAddr) Network() string { return "h2-stream" }
func (wsStreamAddr) String() string  { return "h2-stream" }

// ---------------------------------------------------------------------------
// Clients through the proxy.

// wsProxyAnswer is the proxy's answer to a client's handshake as it came
// over the wire, before any translation for coder/websocket.
type wsProxyAnswer struct {
	status int
	header http.Header
}

// wsDialVia opens a WebSocket to rawURL (ws:// or wss://) through the
// proxy with coder/websocket as the client, over an h1 Upgrade in
// absolute form ("h1client") or an RFC 8441 extended CONNECT on an h2
// connection ("h2client"). It returns the connection, the proxy's answer
// and coder's error (with the response it got, for refusals).
func wsDialVia(t testing.TB, ctx context.Context, p *Proxy, client, rawURL string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, *wsProxyAnswer, error) {
	t.Helper()
	switch client {
	case "h1client":
		return wsDialWith(t, ctx, &wsH1Transport{t: t, p: p, tlsConf: p.TLSConfig("http/1.1")}, rawURL, opts)
	case "h2client":
		return wsDialWith(t, ctx, &wsH2Transport{t: t, cc: dialH2(t, p)}, rawURL, opts)
	}
	t.Fatalf("unknown client kind %q", client)
	return nil, nil, nil, nil
}

// wsTransport carries coder/websocket's handshake to the proxy and keeps
// the proxy's answer as it came.
type wsTransport interface {
	http.RoundTripper
	answer() *wsProxyAnswer
}

// wsDialWith runs coder/websocket's Dial over rt.
func wsDialWith(t testing.TB, ctx context.Context, rt wsTransport, rawURL string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, *wsProxyAnswer, error) {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	cp := *opts
	cp.HTTPClient = &http.Client{Transport: rt}
	c, resp, err := websocket.Dial(ctx, rawURL, &cp)
	if c != nil {
		c.SetReadLimit(1 << 20)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, rt.answer(), err
}

// wsH2Transport carries coder/websocket's HTTP/1.1 handshake as an RFC
// 8441 extended CONNECT on one h2 connection: the GET becomes CONNECT with
// :protocol websocket, the key and the Upgrade/Connection pair are dropped
// (§5), and a 200 comes back to the library as the 101 it expects, with
// the accept computed here.
type wsH2Transport struct {
	t   testing.TB
	cc  *http2.ClientConn
	got *wsProxyAnswer
}

func (tr *wsH2Transport) answer() *wsProxyAnswer { return tr.got }

func (tr *wsH2Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	key := req.Header.Get("Sec-WebSocket-Key")
	hdr := req.Header.Clone()
	for _, k := range []string{"Connection", "Upgrade", "Sec-WebSocket-Key"} {
		hdr.Del(k)
	}
	hdr[":protocol"] = []string{"websocket"}
	// The stream outlives the handshake's context: it ends when the
	// library closes the connection, or with the test.
	sctx, cancel := context.WithCancel(context.Background())
	tr.t.Cleanup(cancel)
	stop := context.AfterFunc(req.Context(), cancel)
	st, err := wsExtendedConnect(sctx, tr.cc, req.URL, hdr)
	if !stop() {
		err = errors.Join(err, req.Context().Err())
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp := st.resp
	tr.got = &wsProxyAnswer{status: resp.StatusCode, header: resp.Header.Clone()}
	if resp.StatusCode/100 != 2 {
		st.pw.Close()
		return resp, nil
	}
	out := &http.Response{
		Status: "101 Switching Protocols", StatusCode: http.StatusSwitchingProtocols,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: resp.Header.Clone(), Request: req,
		Body: &wsH2ClientStream{s: st, cancel: cancel},
	}
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", "websocket")
	out.Header.Set("Sec-WebSocket-Accept", wsAccept(key))
	return out, nil
}

// wsH2Stream is the client's side of an extended CONNECT: the response,
// the request body's writer, and a channel closed once x/net has finished
// with the request side (it closes the request body then).
type wsH2Stream struct {
	resp    *http.Response
	pw      *io.PipeWriter
	reqDone <-chan struct{}
}

// closeWrite sends END_STREAM and waits until x/net has sent it: closing
// the response body before that makes x/net reset the stream instead
// (RST_STREAM CANCEL or NO_ERROR), which would turn a clean end into an
// abort.
func (s *wsH2Stream) closeWrite(within time.Duration) {
	s.pw.Close()
	select {
	case <-s.reqDone:
	case <-time.After(within):
	}
}

// wsExtendedConnect sends an RFC 8441 extended CONNECT for u (:scheme http
// for ws, https for wss; :authority and :path from u) with hdr, which must
// hold ":protocol".
func wsExtendedConnect(ctx context.Context, cc *http2.ClientConn, u *url.URL, hdr http.Header) (*wsH2Stream, error) {
	scheme := u.Scheme
	switch scheme {
	case "ws":
		scheme = "http"
	case "wss":
		scheme = "https"
	}
	pr, pw := io.Pipe()
	body := &wsSignalBody{PipeReader: pr, closed: make(chan struct{})}
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Scheme: scheme, Host: u.Host, Path: u.Path, RawQuery: u.RawQuery},
		Host:          u.Host,
		Header:        hdr,
		Body:          body,
		ContentLength: -1,
	}).WithContext(ctx)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		pw.CloseWithError(err)
		return nil, err
	}
	return &wsH2Stream{resp: resp, pw: pw, reqDone: body.closed}, nil
}

// wsSignalBody is a request body that reports being closed.
type wsSignalBody struct {
	*io.PipeReader
	closed chan struct{}
	once   sync.Once
}

func (b *wsSignalBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.PipeReader.Close()
}

// wsH2ClientStream is the client's end of an extended CONNECT stream.
type wsH2ClientStream struct {
	s      *wsH2Stream
	cancel context.CancelFunc
	once   sync.Once
}

func (c *wsH2ClientStream) Read(b []byte) (int, error)  { return c.s.resp.Body.Read(b) }
func (c *wsH2ClientStream) Write(b []byte) (int, error) { return c.s.pw.Write(b) }

// Close ends our side with END_STREAM and waits (briefly) for the peer's,
// so that a finished close handshake is not turned into a RST_STREAM. By
// then (RFC 6455 §7.1.1) the origin has closed, or is about to.
func (c *wsH2ClientStream) Close() error {
	c.once.Do(func() {
		timer := time.AfterFunc(2*time.Second, c.cancel)
		defer timer.Stop()
		c.s.pw.Close()
		_, _ = io.Copy(io.Discard, c.s.resp.Body)
		c.s.closeWrite(2 * time.Second)
		c.s.resp.Body.Close()
		c.cancel()
	})
	return nil
}

// wsH1Transport sends coder/websocket's handshake to the proxy in absolute
// form (RFC 9112 §3.2.2) over its own TLS connection, http:// for ws and
// https:// for wss, as a browser's proxy client would.
type wsH1Transport struct {
	t       testing.TB
	p       *Proxy
	tlsConf *tls.Config
	// originForm sends "GET /path" with Host, as a browser does to the
	// origin it talks to (gateway mode), instead of the absolute form.
	originForm bool
	got        *wsProxyAnswer
}

func (tr *wsH1Transport) answer() *wsProxyAnswer { return tr.got }

func (tr *wsH1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: ioTimeout}, Config: tr.tlsConf}
	nc, err := d.DialContext(req.Context(), "tcp", tr.p.Addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*tls.Conn)
	tr.t.Cleanup(func() { c.Close() })
	stop := context.AfterFunc(req.Context(), func() { c.Close() })
	defer stop()
	write := req.WriteProxy
	if tr.originForm {
		write = req.Write
	}
	if err := write(c); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	tr.got = &wsProxyAnswer{status: resp.StatusCode, header: resp.Header.Clone()}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &wsH1ClientStream{Reader: br, Conn: c}
	}
	return resp, nil
}

// wsH1ClientStream reads through the buffer that read the 101, so bytes
// that arrived with it are not lost.
type wsH1ClientStream struct {
	*bufio.Reader
	*tls.Conn
}

func (s *wsH1ClientStream) Read(b []byte) (int, error) { return s.Reader.Read(b) }

// ---------------------------------------------------------------------------
// Access log.

// wsAccessLine waits for the access line of a WebSocket to target
// (scheme://authority/path, as the proxy logs it) with the given method.
func wsAccessLine(t testing.TB, p *Proxy, method, targetSuffix string) map[string]any {
	t.Helper()
	return p.WaitLog(t, 5*time.Second, func(l map[string]any) bool {
		target, _ := l["target"].(string)
		return l["message"] == "access" && l["kind"] == "websocket" && l["method"] == method &&
			strings.HasSuffix(target, targetSuffix)
	})
}

// wsLogOnFailure logs, when t fails, the proxy's lines that mention what
// (an origin address), for the report.
func wsLogOnFailure(t testing.TB, p *Proxy, what string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, l := range p.Logs() {
			if s := fmt.Sprint(l); strings.Contains(s, what) {
				t.Logf("proxy log: %v", l)
			}
		}
	})
}

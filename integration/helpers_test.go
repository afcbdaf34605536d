package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// This file holds the helpers shared by the end-to-end tests of issue 2:
// loopback targets and origins, a throwaway CA, and HTTP/1.1 and HTTP/2
// clients that talk to the proxy over real TLS.

// ioTimeout bounds every single exchange with the proxy, so that a hung
// proxy fails one test quickly instead of stalling the suite until go
// test's global timeout.
const ioTimeout = 20 * time.Second

// testContext returns a context that ends with the test or after d.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---------------------------------------------------------------------------
// Loopback TCP targets.

// tcpTarget is a loopback TCP server that tunnels end at. It counts the
// connections it accepted, so policy tests can prove nothing was dialled.
// With a handler, each connection is served by it; without one, accepted
// connections are handed to the test through Next so that the test drives
// the target side step by step.
type tcpTarget struct {
	ln       net.Listener
	handle   func(*net.TCPConn)
	accepted atomic.Int64
	conns    chan *net.TCPConn

	mu        sync.Mutex
	open      map[*net.TCPConn]struct{}
	wg        sync.WaitGroup
	acceptErr error // why Accept stopped, if not the close; read after wg.Wait
}

// startTarget listens on 127.0.0.1:0 until the test ends.
func startTarget(t testing.TB, handle func(*net.TCPConn)) *tcpTarget {
	t.Helper()
	tg, err := listenTarget(t, "127.0.0.1:0", handle)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// listenTarget listens on addr; it returns the error so that callers can
// skip what the machine does not have (an IPv6 loopback, say).
func listenTarget(t testing.TB, addr string, handle func(*net.TCPConn)) (*tcpTarget, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	tg := &tcpTarget{ln: ln, handle: handle, conns: make(chan *net.TCPConn, 64), open: map[*net.TCPConn]struct{}{}}
	tg.wg.Add(1)
	go tg.serve()
	t.Cleanup(func() {
		if err := tg.close(); err != nil {
			t.Errorf("target %s stopped accepting: %v", tg.Addr(), err)
		}
	})
	return tg, nil
}

// serve accepts until the listener closes. A handled connection is closed
// when its handler returns, so that a long benchmark does not run the test
// process out of file descriptors (which stops Accept and leaves the
// proxy's dials waiting in the listen queue).
func (tg *tcpTarget) serve() {
	defer tg.wg.Done()
	for {
		c, err := tg.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				tg.acceptErr = err
			}
			return
		}
		tc := c.(*net.TCPConn)
		tg.accepted.Add(1)
		tg.mu.Lock()
		tg.open[tc] = struct{}{}
		tg.mu.Unlock()
		if tg.handle == nil {
			tg.conns <- tc
			continue
		}
		tg.wg.Add(1)
		go func() {
			defer tg.wg.Done()
			tg.handle(tc)
			tg.mu.Lock()
			delete(tg.open, tc)
			tg.mu.Unlock()
			tc.Close()
		}()
	}
}

// close stops accepting, closes every connection (which ends the handlers)
// and waits for the goroutines, so that goleak finds none of them. It
// returns the error that stopped Accept before, if any.
func (tg *tcpTarget) close() error {
	tg.ln.Close()
	tg.mu.Lock()
	for c := range tg.open {
		c.Close()
	}
	tg.mu.Unlock()
	tg.wg.Wait()
	return tg.acceptErr
}

func (tg *tcpTarget) Addr() string { return tg.ln.Addr().String() }

func (tg *tcpTarget) Port() int { return tg.ln.Addr().(*net.TCPAddr).Port }

// Accepted returns how many connections reached the target.
func (tg *tcpTarget) Accepted() int64 { return tg.accepted.Load() }

// Next returns the next connection accepted by a handler-less target.
func (tg *tcpTarget) Next(t testing.TB) *net.TCPConn {
	t.Helper()
	select {
	case c := <-tg.conns:
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		return c
	case <-time.After(ioTimeout):
		t.Fatalf("target %s: no connection within %v", tg.Addr(), ioTimeout)
		return nil
	}
}

// echoConn copies everything back and passes the client's end of input on
// as a FIN (half-close), so a tunnel's end-of-stream is echoed too.
func echoConn(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

// closedPort returns a loopback port that nothing listens on: connecting
// to it is refused at once.
func closedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// readFull reads exactly n bytes from r (whose deadline bounds the wait),
// failing the test with what arrived otherwise.
func readFull(t testing.TB, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if got, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: got %d (%q): %v", n, got, b[:got], err)
	}
	return b
}

// expectEOF asserts that r ends cleanly with no further bytes.
func expectEOF(t testing.TB, r io.Reader, what string) {
	t.Helper()
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) > 0 {
		t.Fatalf("%s: want clean EOF, got %d more bytes (%q) and error %v", what, len(rest), truncate(rest), err)
	}
}

func truncate(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// ---------------------------------------------------------------------------
// Test payloads.

// payload returns n deterministic pseudo-random bytes as a stream. Random
// content (rather than a repeated pattern) makes reordered or duplicated
// chunks change the hash.
func payload(seed uint64, n int64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(mrand.NewChaCha8(s), n)
}

// payloadSum is the SHA-256 of payload(seed, n).
func payloadSum(seed uint64, n int64) [32]byte {
	sum, _, _ := hashReader(payload(seed, n))
	return sum
}

// hashReader reads r to its end and returns the SHA-256 and the length.
func hashReader(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// ---------------------------------------------------------------------------
// A throwaway CA for TLS origins.

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "h2proxy integration test origin CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key}
	ca.pem = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return ca
}

// issue returns a server certificate for 127.0.0.1, ::1 and localhost. The
// chain carries the CA too: Chrome matches --ignore-certificate-errors-spki-list
// against the certificates the server sends.
func (ca *testCA) issue(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// writeTempFile writes data to a file in the test's temp dir.
func writeTempFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// Loopback HTTP origins.

// startOrigin serves h on 127.0.0.1:0, over TLS with cert when cert is not
// nil, until the test ends, and returns host:port.
func startOrigin(t testing.TB, h http.Handler, cert *tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: ioTimeout, ErrorLog: log.New(io.Discard, "", 0)}
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client connections to the proxy.

// h1Conn is an HTTP/1.1 connection to the proxy over TLS. Reads go through
// br, so bytes buffered while reading a response head are not lost when
// the connection turns into a tunnel.
type h1Conn struct {
	*tls.Conn
	br *bufio.Reader
}

// dialH1 opens a TLS connection to the proxy that negotiated http/1.1. It
// is closed when the test ends.
func dialH1(t testing.TB, p *Proxy) *h1Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", p.Addr, p.TLSConfig("http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if got := c.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Fatalf("ALPN = %q, want http/1.1", got)
	}
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	return &h1Conn{Conn: c, br: bufio.NewReader(c)}
}

// Read reads through the buffer.
func (c *h1Conn) Read(b []byte) (int, error) { return c.br.Read(b) }

// send writes raw bytes in a single Write (one TLS record for small
// writes), which is what pipelining tests rely on.
func (c *h1Conn) send(t testing.TB, b []byte) {
	t.Helper()
	if _, err := c.Conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// response reads one response head to a request with the given method.
func (c *h1Conn) response(t testing.TB, method string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response to %s: %v", method, err)
	}
	return resp
}

// closeWrite ends the client's sending direction the way a TLS client
// half-closes: close_notify, then a TCP FIN.
func (c *h1Conn) closeWrite(t testing.TB) {
	t.Helper()
	if err := c.Conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// connectRequest is an HTTP/1.1 CONNECT request head (RFC 9110 §9.3.6).
func connectRequest(authority string) string {
	return "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"
}

// h1Connect sends CONNECT authority followed, in the same write, by early
// (bytes a client pipelines behind the request, such as a TLS
// ClientHello), and reads the response head.
func h1Connect(t testing.TB, p *Proxy, authority string, early []byte) (*h1Conn, *http.Response) {
	t.Helper()
	c := dialH1(t, p)
	c.send(t, append([]byte(connectRequest(authority)), early...))
	return c, c.response(t, http.MethodConnect)
}

// h1Refused sends raw (one or more requests) on a new connection and
// returns the first response with its body read, asserting that the proxy
// then closed the connection: after a refusal nothing else the client sent
// may be read as a request (RFC 9112 §9.6, and the "Connection: close"
// rule for failed CONNECTs).
func h1Refused(t testing.TB, p *Proxy, raw string, method string) *http.Response {
	t.Helper()
	c := dialH1(t, p)
	c.send(t, []byte(raw))
	resp := c.response(t, method)
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s: reading body: %v", firstLine(raw), err)
	}
	expectEOF(t, c, firstLine(raw)+": connection after the refusal")
	return resp
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// ---------------------------------------------------------------------------
// HTTP/2 client connections to the proxy.

// dialH2 opens one HTTP/2 connection to the proxy; every request of the
// test that uses it shares that single connection. It is closed when the
// test ends.
func dialH2(t testing.TB, p *Proxy) *http2.ClientConn {
	t.Helper()
	return dialH2With(t, p, p.TLSConfig("h2"))
}

// dialH2With is dialH2 with a TLS config of the caller's (another server
// name, say); it must offer h2.
func dialH2With(t testing.TB, p *Proxy, conf *tls.Config) *http2.ClientConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", p.Addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().NegotiatedProtocol; got != "h2" {
		c.Close()
		t.Fatalf("ALPN = %q, want h2", got)
	}
	// Large frames keep framing overhead down for the bulk tests; the
	// default windows (4 MiB a stream, 1 GiB the connection) already let
	// hundreds of tunnels run without waiting on each other.
	tr := &http2.Transport{MaxReadFrameSize: 1 << 20}
	cc, err := tr.NewClientConn(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	// Until the server's SETTINGS arrive the client assumes a limit of 100
	// concurrent streams and refuses more ("client conn not usable"). The
	// server sends SETTINGS first, so once a PING is answered they have
	// been applied.
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := cc.Ping(ctx); err != nil {
		t.Fatalf("h2 PING: %v", err)
	}
	return cc
}

// h2Tunnel is a CONNECT stream (RFC 9113 §8.5): writes go out as DATA on
// the request side, closeWrite sends END_STREAM, reads come from the
// response's DATA.
type h2Tunnel struct {
	resp *http.Response
	up   *io.PipeWriter
}

// h2Connect opens a CONNECT stream to authority on cc and returns it with
// the response (whatever its status). The stream is torn down when the
// test ends.
func h2Connect(t testing.TB, ctx context.Context, cc *http2.ClientConn, authority string) (*h2Tunnel, error) {
	return h2ConnectHeader(t, ctx, cc, authority, http.Header{})
}

// h2ConnectHeader is h2Connect with the request's fields (credentials,
// say) in hdr.
func h2ConnectHeader(t testing.TB, ctx context.Context, cc *http2.ClientConn, authority string, hdr http.Header) (*h2Tunnel, error) {
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: authority},
		Host:          authority,
		Header:        hdr,
		Body:          pr,
		ContentLength: -1,
	}).WithContext(ctx)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		pw.CloseWithError(err)
		return nil, err
	}
	// x/net's client stops watching ctx once RoundTrip has returned while
	// the request body is still open, as a tunnel's is: without this a
	// read from a target that never answers would outwait ctx for good.
	stop := context.AfterFunc(ctx, func() {
		pw.CloseWithError(context.Cause(ctx))
		resp.Body.Close()
	})
	t.Cleanup(func() {
		stop()
		pw.CloseWithError(errors.New("test over"))
		resp.Body.Close()
	})
	return &h2Tunnel{resp: resp, up: pw}, nil
}

func (s *h2Tunnel) Read(b []byte) (int, error)  { return s.resp.Body.Read(b) }
func (s *h2Tunnel) Write(b []byte) (int, error) { return s.up.Write(b) }
func (s *h2Tunnel) closeWrite()                 { s.up.Close() }

// mustH2Connect is h2Connect for tests that expect a 200.
func mustH2Connect(t testing.TB, ctx context.Context, cc *http2.ClientConn, authority string) *h2Tunnel {
	t.Helper()
	s, err := h2Connect(t, ctx, cc, authority)
	if err != nil {
		t.Fatalf("h2 CONNECT %s: %v", authority, err)
	}
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("h2 CONNECT %s: status %d, Proxy-Status %q", authority, s.resp.StatusCode, s.resp.Header.Get("Proxy-Status"))
	}
	return s
}

// ---------------------------------------------------------------------------
// Refusals.

// wantRefusal asserts status and a Proxy-Status field (RFC 9209 §2) from
// h2proxy whose error parameter is errType.
func wantRefusal(t testing.TB, what string, resp *http.Response, status int, errType string) {
	t.Helper()
	ps := resp.Header.Get("Proxy-Status")
	if resp.StatusCode != status {
		t.Errorf("%s: status %d (Proxy-Status %q), want %d", what, resp.StatusCode, ps, status)
		return
	}
	if errType == "" {
		if !strings.HasPrefix(ps, "h2proxy; error=") {
			t.Errorf("%s: Proxy-Status %q, want one naming an error", what, ps)
		}
		return
	}
	want := "h2proxy; error=" + errType
	if ps != want && !strings.HasPrefix(ps, want+";") {
		t.Errorf("%s: Proxy-Status %q, want error=%s", what, ps, errType)
	}
}

// hostPort joins host (already bracketed when IPv6) and port.
func hostPort(host string, port int) string {
	return host + ":" + strconv.Itoa(port)
}

// sameBytes compares two short byte slices and reports them readably.
func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, truncate(got), truncate(want))
	}
}

// ---------------------------------------------------------------------------
// A raw HTTP/2 client, for what Go's client cannot do: keep sending on a
// stream after the server ended its side with END_STREAM.

// h2FrameConn is one HTTP/2 connection to the proxy driven frame by frame.
type h2FrameConn struct {
	c   *tls.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

// dialH2Frames connects, sends the preface and our SETTINGS, and grants the
// server a large connection window so that DATA never waits on us.
func dialH2Frames(t testing.TB, p *Proxy) *h2FrameConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", p.Addr, p.TLSConfig("h2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	r := &h2FrameConn{c: c, fr: http2.NewFramer(c, c)}
	r.enc = hpack.NewEncoder(&r.buf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteWindowUpdate(0, 1<<30); err != nil {
		t.Fatal(err)
	}
	return r
}

// connect opens stream id as a CONNECT to authority (RFC 9113 §8.5) and
// returns the response status.
func (r *h2FrameConn) connect(t testing.TB, id uint32, authority string) string {
	t.Helper()
	r.buf.Reset()
	_ = r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = r.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndHeaders: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		f := r.next(t)
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id {
			return h.PseudoValue("status")
		}
	}
}

// next returns the next frame that matters to a test, answering SETTINGS
// and PING on the way.
func (r *h2FrameConn) next(t testing.TB) http2.Frame {
	t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("h2: reading a frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = r.fr.WritePing(true, f.Data)
			}
		case *http2.WindowUpdateFrame:
		case *http2.GoAwayFrame:
			t.Fatalf("h2: GOAWAY %v", f.ErrCode)
		default:
			return f
		}
	}
}

// readStream collects DATA on stream id until END_STREAM. It fails on a
// RST_STREAM. Consumed bytes are returned to the stream's window so that
// the server is never blocked by us.
func (r *h2FrameConn) readStream(t testing.TB, id uint32) []byte {
	t.Helper()
	var got []byte
	for {
		switch f := r.next(t).(type) {
		case *http2.DataFrame:
			if f.StreamID != id {
				continue
			}
			got = append(got, f.Data()...)
			if n := len(f.Data()); n > 0 {
				_ = r.fr.WriteWindowUpdate(id, uint32(n))
			}
			if f.StreamEnded() {
				return got
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				t.Fatalf("h2: RST_STREAM %v after %q", f.ErrCode, got)
			}
		}
	}
}

// send writes DATA on stream id, with END_STREAM when end is set.
func (r *h2FrameConn) send(t testing.TB, id uint32, data []byte, end bool) {
	t.Helper()
	if err := r.fr.WriteData(id, end, data); err != nil {
		t.Fatal(err)
	}
}

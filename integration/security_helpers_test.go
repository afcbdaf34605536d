package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/http2"
)

// Helpers shared by the security suite (issue 5): credentials, clients
// from other loopback addresses, targets and origins that record what
// reached them, the proxy's memory, and its metrics.

// ---------------------------------------------------------------------------
// Credentials.

// writeHtpasswd writes an htpasswd file with one bcrypt entry per user.
// MinCost keeps the suite fast; the proxy accepts any bcrypt cost.
func writeHtpasswd(t testing.TB, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	for user, pass := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", user, h)
	}
	return writeTempFile(t, "htpasswd", []byte(b.String()))
}

// basicAuth is a Proxy-Authorization value (RFC 9110 §11.7.1, RFC 7617).
func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// authHeader returns a header carrying Proxy-Authorization, or an empty
// one when auth is "".
func authHeader(auth string) http.Header {
	h := http.Header{}
	if auth != "" {
		h.Set("Proxy-Authorization", auth)
	}
	return h
}

// ---------------------------------------------------------------------------
// Client connections from a chosen loopback address.

// Linux routes all of 127.0.0.0/8 to lo, so a test can be several clients
// at once: per-client limits key on the source address.
const (
	otherClientIP = "127.0.0.2"
	thirdClientIP = "127.0.0.3"
)

// dialTLSFrom opens a TLS connection to the proxy from source address src
// ("" for the default), offering alpn. It is closed when the test ends.
func dialTLSFrom(t testing.TB, p *Proxy, src string, alpn ...string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: ioTimeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := tls.DialWithDialer(d, "tcp", p.Addr, p.TLSConfig(alpn...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	return c
}

// dialH1From is dialH1 from source address src.
func dialH1From(t testing.TB, p *Proxy, src string) *h1Conn {
	t.Helper()
	c := dialTLSFrom(t, p, src, "http/1.1")
	return &h1Conn{Conn: c, br: bufio.NewReader(c)}
}

// h1RoundTrip sends raw on a new HTTP/1.1 connection from src and returns
// the response with its body read (the body is in the second result).
// Unlike h1Refused it does not require the proxy to close the connection,
// so it suits answers that may keep it open.
func h1RoundTrip(t testing.TB, p *Proxy, src, raw, method string) (*http.Response, string) {
	t.Helper()
	c := dialH1From(t, p, src)
	c.send(t, []byte(raw))
	resp := c.response(t, method)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading body: %v", firstLine(raw), err)
	}
	return resp, string(body)
}

// h1ConnectAuth is an HTTP/1.1 CONNECT head carrying Proxy-Authorization.
func h1ConnectAuth(authority, auth string) string {
	return "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n" + headerLines(authHeader(auth)) + "\r\n"
}

// h1GetAuth is an absolute-form GET (RFC 9112 §3.2.2) with
// Proxy-Authorization.
func h1GetAuth(rawURL, auth string) string {
	u, _ := url.Parse(rawURL)
	return "GET " + rawURL + " HTTP/1.1\r\nHost: " + u.Host + "\r\n" + headerLines(authHeader(auth)) + "\r\n"
}

func headerLines(h http.Header) string {
	var b strings.Builder
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	return b.String()
}

// dialH2From is dialH2 from source address src.
func dialH2From(t testing.TB, p *Proxy, src string) *http2.ClientConn {
	t.Helper()
	c := dialTLSFrom(t, p, src, "h2")
	_ = c.SetDeadline(time.Time{}) // the client conn manages its own timing
	cc, err := (&http2.Transport{}).NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := cc.Ping(ctx); err != nil { // the server's SETTINGS are applied
		t.Fatalf("h2 PING: %v", err)
	}
	return cc
}

// connectAnswerTimeout bounds a CONNECT stream of these tests, its answer
// and its use: none dials anything slower than loopback, and each echoes
// a message or two.
const connectAnswerTimeout = 10 * time.Second

// h2ConnectAuth opens a CONNECT stream (RFC 9113 §8.5) carrying the
// fields of hdr, as h2Connect does without them.
func h2ConnectAuth(t testing.TB, cc *http2.ClientConn, authority string, hdr http.Header) *h2Tunnel {
	t.Helper()
	s, err := h2ConnectHeader(t, testContext(t, connectAnswerTimeout), cc, authority, hdr)
	if err != nil {
		t.Fatalf("h2 CONNECT %s: %v", authority, err)
	}
	return s
}

// h2GetAuth sends GET rawURL with hdr on cc and returns the response and
// its body.
func h2GetAuth(t testing.TB, cc *http2.ClientConn, rawURL string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, ioTimeout), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("h2 GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// echoOnce sends msg through an open tunnel and reads it back.
func echoOnce(t testing.TB, rw io.ReadWriter, msg string) {
	t.Helper()
	if _, err := rw.Write([]byte(msg)); err != nil {
		t.Fatalf("tunnel write: %v", err)
	}
	sameBytes(t, "echo through the tunnel", readFull(t, rw, len(msg)), []byte(msg))
}

// ---------------------------------------------------------------------------
// Proxy requests of every kind.

// The four ways a proxy request reaches policy: CONNECT and forwarding
// (absolute-form on h1, :scheme http on h2), over each front end.
const (
	kindH1Connect = "h1 CONNECT"
	kindH2Connect = "h2 CONNECT"
	kindH1Forward = "h1 forward"
	kindH2Forward = "h2 forward"
)

var proxyKinds = []string{kindH1Connect, kindH2Connect, kindH1Forward, kindH2Forward}

// proxyRequest sends one proxy request of kind for authority from client
// address src with Proxy-Authorization auth ("" for none). It returns the
// response, the response body for refusals and forwards, and for a
// CONNECT that succeeded the open tunnel.
func proxyRequest(t *testing.T, p *Proxy, kind, src, authority, auth string) (*http.Response, string, io.ReadWriter) {
	t.Helper()
	switch kind {
	case kindH1Connect:
		c := dialH1From(t, p, src)
		c.send(t, []byte(h1ConnectAuth(authority, auth)))
		resp := c.response(t, http.MethodConnect)
		if resp.StatusCode == http.StatusOK {
			return resp, "", c
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body), nil
	case kindH2Connect:
		s := h2ConnectAuth(t, dialH2From(t, p, src), authority, authHeader(auth))
		if s.resp.StatusCode == http.StatusOK {
			return s.resp, "", s
		}
		body, _ := io.ReadAll(s.resp.Body)
		return s.resp, string(body), nil
	case kindH1Forward:
		resp, body := h1RoundTrip(t, p, src, h1GetAuth("http://"+authority+"/", auth), http.MethodGet)
		return resp, body, nil
	case kindH2Forward:
		resp, body := h2GetAuth(t, dialH2From(t, p, src), "http://"+authority+"/", authHeader(auth))
		return resp, body, nil
	}
	t.Fatalf("unknown kind %q", kind)
	return nil, "", nil
}

// closeTunnel ends the client's side of a tunnel from proxyRequest.
func closeTunnel(tun io.ReadWriter) {
	switch c := tun.(type) {
	case *h1Conn:
		c.Close()
	case *h2Tunnel:
		c.closeWrite()
	}
}

// connectStatus sends an h1 or h2 CONNECT and returns the status and
// Proxy-Status; a tunnel that opens is closed again.
func connectStatus(t *testing.T, p *Proxy, kind, authority, auth string) (int, string) {
	t.Helper()
	resp, _, tun := proxyRequest(t, p, kind, "", authority, auth)
	if tun != nil {
		echoOnce(t, tun, "ok")
		closeTunnel(tun)
	}
	return resp.StatusCode, resp.Header.Get("Proxy-Status")
}

// ---------------------------------------------------------------------------
// Targets that count concurrency, and origins that record requests.

// gauge counts connections open at once and the most ever open: floods
// must not turn into unbounded upstream connections.
type gauge struct{ cur, peak atomic.Int64 }

// track wraps a target handler so that it is counted while it runs.
func (g *gauge) track(h func(*net.TCPConn)) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		n := g.cur.Add(1)
		for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
		}
		defer g.cur.Add(-1)
		h(c)
	}
}

// seenRequest is what an origin received.
type seenRequest struct {
	Method, Path, Host, Proto string
	Header                    http.Header
	Body                      string
}

// String keeps failure messages readable when a test sent huge fields.
func (r seenRequest) String() string {
	var fields []string
	for k, vs := range r.Header {
		for _, v := range vs {
			if len(v) > 64 {
				v = fmt.Sprintf("%.32s... (%d bytes)", v, len(v))
			}
			fields = append(fields, k+": "+v)
		}
	}
	sort.Strings(fields)
	return fmt.Sprintf("{%s %s Host %q %s [%s] body %d bytes}", r.Method, r.Path, r.Host, r.Proto, strings.Join(fields, "; "), len(r.Body))
}

// recordingOrigin is a plain-HTTP loopback origin that keeps every request
// it is sent, so smuggling tests can say exactly what got through.
type recordingOrigin struct {
	Addr string
	mu   sync.Mutex
	seen []seenRequest
}

func startRecordingOrigin(t testing.TB) *recordingOrigin {
	t.Helper()
	o := &recordingOrigin{}
	o.Addr = startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		o.mu.Lock()
		o.seen = append(o.seen, seenRequest{r.Method, r.URL.Path, r.Host, r.Proto, r.Header.Clone(), string(body)})
		o.mu.Unlock()
		io.WriteString(w, "origin says hi")
	}), nil)
	return o
}

// Seen returns the requests so far.
func (o *recordingOrigin) Seen() []seenRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]seenRequest(nil), o.seen...)
}

// wantSeen asserts the origin received exactly n requests and returns them.
func (o *recordingOrigin) wantSeen(t testing.TB, what string, n int) []seenRequest {
	t.Helper()
	seen := o.Seen()
	if len(seen) != n {
		t.Errorf("%s: origin received %d requests, want %d: %+v", what, len(seen), n, seen)
	}
	return seen
}

// ---------------------------------------------------------------------------
// The proxy process's memory.

// rssKiB reads the resident set size of pid (VmRSS, in KiB).
func rssKiB(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// rssMonitor samples a process's RSS until stopped, keeping the peak: an
// attack may balloon memory briefly and the GC give it back before the end.
type rssMonitor struct {
	pid        int
	base, peak atomic.Int64
	stop       chan struct{}
	done       chan struct{}
}

func watchRSS(t testing.TB, p *Proxy) *rssMonitor {
	t.Helper()
	m := &rssMonitor{pid: p.PID(), stop: make(chan struct{}), done: make(chan struct{})}
	m.base.Store(rssKiB(m.pid))
	m.peak.Store(m.base.Load())
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
				if n := rssKiB(m.pid); n > m.peak.Load() {
					m.peak.Store(n)
				}
			}
		}
	}()
	t.Cleanup(m.halt)
	return m
}

func (m *rssMonitor) halt() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// check stops sampling and fails the test if the peak RSS grew by more
// than maxGrowthMiB over the baseline.
func (m *rssMonitor) check(t testing.TB, what string, maxGrowthMiB int64) {
	t.Helper()
	m.halt()
	base, peak := m.base.Load(), m.peak.Load()
	t.Logf("%s: proxy RSS %d KiB before, peak %d KiB (+%d KiB)", what, base, peak, peak-base)
	if peak-base > maxGrowthMiB<<10 {
		t.Errorf("%s: proxy RSS grew by %d KiB (from %d to %d), more than %d MiB", what, peak-base, base, peak, maxGrowthMiB)
	}
}

// ---------------------------------------------------------------------------
// Admin endpoint.

// adminAddr returns the address of the admin listener the proxy logged
// (started with --admin-listen 127.0.0.1:0).
func adminAddr(t testing.TB, p *Proxy) string {
	t.Helper()
	l := p.WaitLog(t, ioTimeout, func(l map[string]any) bool { return l["message"] == "admin listening" })
	addr, _ := l["addr"].(string)
	return addr
}

// scrapeMetric returns the value of one series (name with its labels, as
// printed) from /metrics, or 0 when it is absent.
func scrapeMetric(t testing.TB, admin, series string) float64 {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: ioTimeout}).Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// accessLines returns the proxy's access log lines so far.
func accessLines(p *Proxy) []map[string]any {
	var out []map[string]any
	for _, l := range p.Logs() {
		if l["message"] == "access" {
			out = append(out, l)
		}
	}
	return out
}

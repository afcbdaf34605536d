package integration

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Forwarding tests: plain-HTTP requests through the proxy, HTTP/1.1
// absolute-form (RFC 9112 §3.2.2) and HTTP/2 with :scheme http and a
// foreign :authority (how Chrome sends http:// URLs to an HTTPS proxy).
// Bodies are big enough (5 MiB up, 10 MiB down) that a proxy that mangles
// or truncates streamed bodies fails the hash check.

const (
	fwdRequestSize  = 5 << 20
	fwdResponseSize = 10 << 20
	fwdRequestSeed  = 1
	fwdResponseSeed = 2
)

// originSaw is what the forwarding origin observed of one request.
type originSaw struct {
	header http.Header
	sum    [32]byte
	n      int64
	err    error
}

// startForwardOrigin serves POST /upload: it hashes the request body,
// reports it with the headers on the returned channel, and answers with
// fwdResponseSize bytes and a set of hop-by-hop response fields that the
// proxy must not pass back.
func startForwardOrigin(t testing.TB) (string, <-chan originSaw) {
	saw := make(chan originSaw, 1)
	addr := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum, n, err := hashReader(r.Body)
		saw <- originSaw{header: r.Header.Clone(), sum: sum, n: n, err: err}
		h := w.Header()
		h.Set("Connection", "X-Resp-Hop")
		h.Set("X-Resp-Hop", "must not pass")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Connection", "keep-alive")
		h.Set("X-End-To-End", "kept")
		h.Set("Content-Length", strconv.Itoa(fwdResponseSize))
		_, _ = io.Copy(w, payload(fwdResponseSeed, fwdResponseSize))
	}), nil)
	return addr, saw
}

func TestForwardH1(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	origin, saw := startForwardOrigin(t)

	// A raw request, so that the hop-by-hop fields reach the proxy exactly
	// as written (Go's client would drop or rewrite some of them).
	c := dialH1(t, p)
	head := "POST http://" + origin + "/upload?q=1 HTTP/1.1\r\n" +
		"Host: " + origin + "\r\n" +
		"Content-Length: " + strconv.Itoa(fwdRequestSize) + "\r\n" +
		"Connection: keep-alive, X-Hop, Upgrade\r\n" +
		"X-Hop: must not pass\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n" +
		"TE: trailers, deflate\r\n" +
		"Upgrade: example/1\r\n" +
		"X-End-To-End: kept\r\n\r\n"
	c.send(t, []byte(head))
	if _, err := io.Copy(c.Conn, payload(fwdRequestSeed, fwdRequestSize)); err != nil {
		t.Fatalf("sending the request body: %v", err)
	}
	checkOriginSaw(t, <-saw, "1.1 h2proxy", []string{"X-Hop", "Proxy-Connection", "Keep-Alive", "Upgrade"})

	resp := c.response(t, http.MethodPost)
	defer resp.Body.Close()
	checkForwardResponse(t, resp)
	waitForwardAccess(t, p, origin)
}

func TestForwardH2(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	origin, saw := startForwardOrigin(t)
	cc := dialH2(t, p)

	// HTTP/2 forbids connection-specific fields (RFC 9113 §8.2.2), so the
	// hop-by-hop fields an h2 client can send are Proxy-Authorization and
	// TE: trailers.
	req, err := http.NewRequestWithContext(testContext(t, ioTimeout), http.MethodPost,
		"http://"+origin+"/upload?q=1", payload(fwdRequestSeed, fwdRequestSize))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = fwdRequestSize
	req.Header.Set("Proxy-Authorization", "Basic dXNlcjpwYXNz")
	req.Header.Set("TE", "trailers")
	req.Header.Set("X-End-To-End", "kept")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("h2 POST through the proxy: %v", err)
	}
	defer resp.Body.Close()
	checkOriginSaw(t, <-saw, "2 h2proxy", nil)
	checkForwardResponse(t, resp)
	waitForwardAccess(t, p, origin)
}

// checkOriginSaw checks the request as the origin received it: the whole
// body, end-to-end fields kept, hop-by-hop fields gone (RFC 9110 §7.6.1),
// and this hop recorded in Via (RFC 9110 §7.6.3).
func checkOriginSaw(t testing.TB, got originSaw, via string, alsoAbsent []string) {
	t.Helper()
	if got.err != nil || got.n != fwdRequestSize || got.sum != payloadSum(fwdRequestSeed, fwdRequestSize) {
		t.Errorf("origin: request body %d bytes (err %v), want %d bytes with the sent SHA-256", got.n, got.err, fwdRequestSize)
	}
	h := got.header
	for _, name := range append([]string{"Proxy-Authorization"}, alsoAbsent...) {
		if v, ok := h[http.CanonicalHeaderKey(name)]; ok {
			t.Errorf("origin: hop-by-hop field %s: %q was forwarded", name, v)
		}
	}
	// TE may only survive as "trailers" (RFC 9110 §10.1.4).
	if te := h.Values("Te"); len(te) > 1 || len(te) == 1 && te[0] != "trailers" {
		t.Errorf("origin: TE = %q, want absent or \"trailers\"", te)
	}
	for _, v := range h.Values("Connection") {
		if strings.Contains(strings.ToLower(v), "x-hop") {
			t.Errorf("origin: Connection %q names a client hop-by-hop field", v)
		}
	}
	if got := h.Get("X-End-To-End"); got != "kept" {
		t.Errorf("origin: X-End-To-End = %q, want \"kept\"", got)
	}
	if got := strings.Join(h.Values("Via"), ", "); !strings.Contains(got, via) {
		t.Errorf("origin: Via = %q, want it to contain %q", got, via)
	}
}

// checkForwardResponse checks the response as the client received it.
func checkForwardResponse(t testing.TB, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, Proxy-Status %q", resp.StatusCode, resp.Header.Get("Proxy-Status"))
	}
	sum, n, err := hashReader(resp.Body)
	if err != nil || n != fwdResponseSize || sum != payloadSum(fwdResponseSeed, fwdResponseSize) {
		t.Errorf("response body %d bytes (err %v), want %d bytes with the origin's SHA-256", n, err, fwdResponseSize)
	}
	for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Connection"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("response: hop-by-hop field %s: %q was passed back", name, v)
		}
	}
	for _, v := range resp.Header.Values("Connection") {
		if strings.Contains(strings.ToLower(v), "x-resp-hop") {
			t.Errorf("response: Connection %q names the origin's hop-by-hop field", v)
		}
	}
	if got := resp.Header.Get("X-End-To-End"); got != "kept" {
		t.Errorf("response: X-End-To-End = %q, want \"kept\"", got)
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Via"), ", "), "h2proxy") {
		t.Errorf("response: Via = %q, want this proxy's hop", resp.Header.Values("Via"))
	}
}

// waitForwardAccess waits for the forward's access line and checks its
// byte counts: the log is where operators see what a request moved.
func waitForwardAccess(t testing.TB, p *Proxy, origin string) {
	t.Helper()
	l := p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
		return l["message"] == "access" && l["kind"] == "forward"
	})
	if l["target"] != origin || l["status"] != float64(200) || l["up"] != float64(fwdRequestSize) || l["down"] != float64(fwdResponseSize) {
		t.Errorf("access line %v: want target %s, status 200, up %d, down %d", l, origin, fwdRequestSize, fwdResponseSize)
	}
}

// An origin that breaks off mid-body: the client's connection is cut (it
// must not take a short body for a whole one) and the request still gets
// its access line, with the bytes that did pass and an error.
func TestForwardBodyBreaksOff(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}), nil)
	c := dialH1(t, p)
	c.send(t, []byte("GET http://"+origin+"/ HTTP/1.1\r\nHost: "+origin+"\r\n\r\n"))
	// Cut before the head left the proxy's buffer, or within the body.
	if resp, err := http.ReadResponse(c.br, nil); err == nil {
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil || n >= 1000000 {
			t.Fatalf("client read %d bytes, err %v: want the body cut short with an error", n, err)
		}
	}
	l := p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
		return l["message"] == "access" && l["kind"] == "forward"
	})
	if l["status"] != float64(200) || l["error"] == nil || l["down"] != float64(1000) {
		t.Errorf("access line %v: want status 200, the 1000 bytes that passed and an error", l)
	}
}

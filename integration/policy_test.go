package integration

import (
	"io"
	"net/http"
	"strconv"
	"testing"

	"golang.org/x/net/http2"
)

// Policy and error tests: refusals carry the right status and a
// Proxy-Status field (RFC 9209), and a refused destination is never
// dialled. Only loopback is ever contacted: refusals of other addresses
// (169.254.169.254, 10.0.0.1) happen before any dial, and the test never
// sends anything there itself.

// proxyRequester sends one proxy request of a given kind to authority and
// returns the response. Policy is written once in the proxy, but each
// front end (h1, h2) and each kind (tunnel, forward) reaches it by its own
// path, so every refusal is checked through all four.
type proxyRequester struct {
	name string
	do   func(t *testing.T, authority string) *http.Response
}

func proxyRequesters(p *Proxy, cc *http2.ClientConn) []proxyRequester {
	return []proxyRequester{
		{"h1 CONNECT", func(t *testing.T, authority string) *http.Response {
			return h1Refused(t, p, connectRequest(authority), http.MethodConnect)
		}},
		{"h2 CONNECT", func(t *testing.T, authority string) *http.Response {
			s, err := h2Connect(t, testContext(t, ioTimeout), cc, authority)
			if err != nil {
				t.Fatalf("h2 CONNECT %s: %v", authority, err)
			}
			return s.resp
		}},
		{"h1 forward", func(t *testing.T, authority string) *http.Response {
			return h1Refused(t, p, "GET http://"+authority+"/ HTTP/1.1\r\nHost: "+authority+"\r\n\r\n", http.MethodGet)
		}},
		{"h2 forward", func(t *testing.T, authority string) *http.Response {
			return h2Get(t, cc, "http://"+authority+"/")
		}},
	}
}

// h2Get sends a GET on cc and returns the response; its body is closed
// when the test ends.
func h2Get(t *testing.T, cc *http2.ClientConn, rawURL string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, ioTimeout), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("h2 GET %s: %v", rawURL, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp
}

// TestPolicyRefusesNonPublicDestinations: every spelling of loopback, names
// that resolve to it, link-local (cloud metadata) and private addresses
// are refused by default with 403 destination_ip_prohibited, and nothing
// reaches the loopback listener on the port they name.
func TestPolicyRefusesNonPublicDestinations(t *testing.T) {
	p := StartProxy(t) // the default policy: no --allow-private
	cc := dialH2(t, p)
	v4 := startTarget(t, nil)
	port := v4.Port()
	listeners := []*tcpTarget{v4}
	// [::1] and the names that resolve to it would reach an IPv6 listener
	// on the same port, if the machine has an IPv6 loopback.
	if v6, err := listenTarget(t, "[::1]:"+strconv.Itoa(port), nil); err == nil {
		listeners = append(listeners, v6)
	} else {
		t.Logf("no IPv6 loopback listener on port %d (%v): [::1] is checked by its refusal only", port, err)
	}

	hosts := []string{
		"127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", // inet_aton spellings of 127.0.0.1
		"[::1]", "[::ffff:127.0.0.1]", // IPv6 loopback, IPv4-mapped loopback
		"localhost", "localhost.", // names that resolve to loopback
		"169.254.169.254", // link-local: cloud metadata
		"10.0.0.1",        // private
	}
	for _, host := range hosts {
		authority := hostPort(host, port)
		for _, r := range proxyRequesters(p, cc) {
			t.Run(r.name+" "+authority, func(t *testing.T) {
				wantRefusal(t, r.name+" "+authority, r.do(t, authority), http.StatusForbidden, "destination_ip_prohibited")
			})
		}
	}
	for _, l := range listeners {
		if n := l.Accepted(); n != 0 {
			t.Errorf("listener %s accepted %d connections: a refused destination was dialled", l.Addr(), n)
		}
	}
}

// TestPolicyRefusesDisallowedPort: ports outside the allowed set (default
// 80,443,1025-65535) are refused with 403 even where private addresses
// are allowed, so the port rule alone is what refuses.
func TestPolicyRefusesDisallowedPort(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	cc := dialH2(t, p)
	for _, r := range proxyRequesters(p, cc) {
		t.Run(r.name, func(t *testing.T) {
			wantRefusal(t, r.name+" port 25", r.do(t, "127.0.0.1:25"), http.StatusForbidden, "")
		})
	}
}

// TestAllowPortsFlag: --allow-ports replaces the default set.
func TestAllowPortsFlag(t *testing.T) {
	allowed := startTarget(t, echoConn)
	other := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--allow-ports", strconv.Itoa(allowed.Port()))
	c, resp := h1Connect(t, p, allowed.Addr(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT to the allowed port: status %d", resp.StatusCode)
	}
	c.Close()
	resp = h1Refused(t, p, connectRequest(other.Addr()), http.MethodConnect)
	wantRefusal(t, "CONNECT to a port not in --allow-ports", resp, http.StatusForbidden, "")
	if n := other.Accepted(); n != 0 {
		t.Errorf("the refused port accepted %d connections", n)
	}
}

// TestMalformedAuthority: targets that are not host:port are answered
// with 400 and a Proxy-Status naming http_request_error.
func TestMalformedAuthority(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	cc := dialH2(t, p)
	cases := []struct{ name, authority string }{
		{"no port", "127.0.0.1"},
		{"port out of range", "127.0.0.1:99999"},
		{"port zero", "127.0.0.1:0"},
		{"bad host character", "exa!mple.com:443"},
		{"bad IPv4 number", "256.1.1.1:443"},
	}
	for _, tc := range cases {
		for _, r := range proxyRequesters(p, cc)[:2] { // CONNECT: the port is required
			t.Run(r.name+" "+tc.name, func(t *testing.T) {
				wantRefusal(t, r.name+" "+tc.authority, r.do(t, tc.authority), http.StatusBadRequest, "http_request_error")
			})
		}
	}
}

// TestUnreachableTarget: a refused TCP connection is a 502 naming
// connection_refused, through every path.
func TestUnreachableTarget(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	cc := dialH2(t, p)
	authority := hostPort("127.0.0.1", closedPort(t))
	for _, r := range proxyRequesters(p, cc) {
		t.Run(r.name, func(t *testing.T) {
			wantRefusal(t, r.name+" "+authority, r.do(t, authority), http.StatusBadGateway, "connection_refused")
		})
	}
}

// TestUnresolvableName: a name that cannot resolve (.invalid never does,
// RFC 6761 §6.4) is a 502 naming dns_error. One request only, as the
// lookup may leave the machine.
func TestUnresolvableName(t *testing.T) {
	p := StartProxy(t)
	resp := h1Refused(t, p, connectRequest("nonexistent.invalid:443"), http.MethodConnect)
	wantRefusal(t, "CONNECT nonexistent.invalid:443", resp, http.StatusBadGateway, "dns_error")
}

// TestPipelinedAfterRefusedConnect: bytes a client sent right behind a
// CONNECT were meant for the tunnel; when the CONNECT is refused they must
// not be read as a request. Here they are a GET for the proxy's own page,
// which would be answered 200 if it were served.
func TestPipelinedAfterRefusedConnect(t *testing.T) {
	p := StartProxy(t)
	raw := connectRequest("127.0.0.1:25") + "GET / HTTP/1.1\r\nHost: " + p.Addr + "\r\n\r\n"
	resp := h1Refused(t, p, raw, http.MethodConnect) // asserts EOF after the 403
	wantRefusal(t, "CONNECT 127.0.0.1:25", resp, http.StatusForbidden, "")
	for _, l := range p.Logs() {
		if l["message"] == "access" && l["kind"] == "local" {
			t.Errorf("the pipelined GET was served: %v", l)
		}
	}
}

// TestLocalRequestIsNotForwarded: a request addressed to the proxy itself
// gets a local answer, not a loop through the proxy.
func TestLocalRequestIsNotForwarded(t *testing.T) {
	p := StartProxy(t)
	cc := dialH2(t, p)
	resp := h2Get(t, cc, "https://"+p.Addr+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / on the proxy: status %d", resp.StatusCode)
	}
	l := p.WaitLog(t, ioTimeout, func(l map[string]any) bool { return l["message"] == "access" })
	if l["kind"] != "local" {
		t.Errorf("access line %v: want kind local", l)
	}
}

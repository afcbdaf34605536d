package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsRouteHost is the route host of the gateway tests. Names under
// .localhost resolve to loopback without DNS (RFC 6761 §6.3), which is
// what lets a browser reach it too.
const wsRouteHost = "app.localhost"

// wsRouteH2Host is the gateway tests' route to an HTTP/2 backend.
const wsRouteH2Host = "h2app.localhost"

// wsGatewayBackend is an HTTP/1.1 backend: /headers answers with the
// request fields it received as JSON, anything else with a WebSocket
// upgrade is a coder/websocket echo.
func wsGatewayBackend(t testing.TB) *wsOrigin {
	return startWSOrigin(t, wsOriginConfig{proto: "h1", plain: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Header)
	}})
}

// wsGatewayClient is an HTTP client that reaches the proxy's port under
// the route's name (SNI and Host app.localhost:PORT) over h1 or h2.
func wsGatewayClient(t testing.TB, p *Proxy, proto string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, p.Addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: p.Roots},
		Protocols:       new(http.Protocols),
	}
	if proto == "h2" {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: ioTimeout}
}

// wsRouteURL is scheme://app.localhost:PROXYPORT+path.
func wsRouteURL(t testing.TB, p *Proxy, scheme, path string) string {
	return wsHostURL(t, p, scheme, wsRouteHost, path)
}

// wsHostURL is scheme://host:PROXYPORT+path.
func wsHostURL(t testing.TB, p *Proxy, scheme, host, path string) string {
	_, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return scheme + "://" + host + ":" + port + path
}

// TestWebSocketGateway exercises gateway mode (--route) without a
// browser: plain requests are reverse-proxied with X-Forwarded-For,
// X-Forwarded-Proto and Forwarded (RFC 7239) set by the proxy and the
// client's own copies dropped unless the client is a trusted proxy;
// WebSockets from h2 clients (RFC 8441) and h1 clients (Upgrade) are
// bridged to the backend's HTTP/1.1 Upgrade.
func TestWebSocketGateway(t *testing.T) {
	backend := wsGatewayBackend(t)
	route := wsRouteHost + "=http://" + backend.addr
	// A second route leads to an h2c-only backend with RFC 8441, which
	// WebSockets must reach by extended CONNECT.
	h2backend := startWSOrigin(t, wsOriginConfig{proto: "h2"})
	p := StartProxy(t, "--route", route, "--route", wsRouteH2Host+"=http://"+h2backend.addr)
	wsLogOnFailure(t, p, backend.addr)
	wsLogOnFailure(t, p, h2backend.addr)
	forged := http.Header{
		"X-Forwarded-For":   {"203.0.113.9"},
		"X-Forwarded-Proto": {"http"},
		"Forwarded":         {"for=203.0.113.9;proto=http"},
	}

	getHeaders := func(t *testing.T, p *Proxy, proto string) http.Header {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, wsRouteURL(t, p, "https", "/headers"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range forged {
			req.Header[k] = v
		}
		resp, err := wsGatewayClient(t, p, proto).Do(req)
		if err != nil {
			t.Fatalf("GET through the route: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET through the route: status %d, Proxy-Status %q", resp.StatusCode, resp.Header.Get("Proxy-Status"))
		}
		if want := map[string]int{"h1": 1, "h2": 2}[proto]; resp.ProtoMajor != want {
			t.Errorf("response over %s, want HTTP/%d", resp.Proto, want)
		}
		var got http.Header
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatalf("backend's answer: %v", err)
		}
		return got
	}

	for _, proto := range []string{"h1", "h2"} {
		t.Run("plain/"+proto, func(t *testing.T) {
			got := getHeaders(t, p, proto)
			if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
				t.Errorf("backend saw X-Forwarded-For %q, want just the client, 127.0.0.1 (the forged one dropped)", v)
			}
			if v := got.Values("X-Forwarded-Proto"); len(v) != 1 || v[0] != "https" {
				t.Errorf("backend saw X-Forwarded-Proto %q, want https", v)
			}
			fwd := strings.Join(got.Values("Forwarded"), ", ")
			if strings.Contains(fwd, "203.0.113.9") || !strings.Contains(fwd, "for=127.0.0.1") || !strings.Contains(fwd, "proto=https") {
				t.Errorf("backend saw Forwarded %q, want for=127.0.0.1;proto=https and not the forged element", fwd)
			}
			line := p.WaitLog(t, 5*time.Second, func(l map[string]any) bool {
				return l["message"] == "access" && l["kind"] == "route" && l["proto"] == map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2.0"}[proto]
			})
			if line["status"] != float64(http.StatusOK) {
				t.Errorf("access line status %v, want 200", line["status"])
			}
		})
	}

	t.Run("plain/trusted", func(t *testing.T) {
		// From a trusted proxy (a load balancer) the fields are kept and
		// extended with the address it connected from (RFC 7239 §4).
		tp := StartProxy(t, "--route", route, "--trusted-proxies", "127.0.0.1/32")
		got := getHeaders(t, tp, "h2")
		if v := strings.Join(got.Values("X-Forwarded-For"), ", "); v != "203.0.113.9, 127.0.0.1" {
			t.Errorf("backend saw X-Forwarded-For %q, want \"203.0.113.9, 127.0.0.1\"", v)
		}
		if fwd := strings.Join(got.Values("Forwarded"), ", "); !strings.Contains(fwd, "for=203.0.113.9") || !strings.Contains(fwd, "for=127.0.0.1") {
			t.Errorf("backend saw Forwarded %q, want the trusted element and ours", fwd)
		}
	})

	for _, client := range []string{"h1client", "h2client"} {
		t.Run("websocket/"+client, func(t *testing.T) {
			ctx := testContext(t, 15*time.Second)
			rt := gatewayTransport(t, p, client, wsRouteHost)
			path := "/ws-" + client
			c, _, ans, err := wsDialWith(t, ctx, rt, wsRouteURL(t, p, "wss", path), &websocket.DialOptions{HTTPHeader: forged.Clone()})
			if err != nil {
				if ans != nil {
					t.Fatalf("dial: %v (proxy answered %d, Proxy-Status %q)", err, ans.status, ans.header.Get("Proxy-Status"))
				}
				t.Fatalf("dial: %v", err)
			}
			msg := "through the gateway from " + client
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
				t.Fatalf("echo: %q, %v", got, err)
			}
			hs := backend.lastHandshake(t)
			if hs.method != http.MethodGet || hs.proto != "HTTP/1.1" || hs.uri != path {
				t.Errorf("backend saw %s %s %s, want GET %s HTTP/1.1", hs.method, hs.uri, hs.proto, path)
			}
			if v := hs.header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
				t.Errorf("backend's handshake had X-Forwarded-For %q, want 127.0.0.1", v)
			}
			if v := hs.header.Get("X-Forwarded-Proto"); v != "https" {
				t.Errorf("backend's handshake had X-Forwarded-Proto %q, want https", v)
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Errorf("close handshake: %v", err)
			}
			method, status := http.MethodGet, float64(http.StatusSwitchingProtocols)
			if client == "h2client" {
				method, status = http.MethodConnect, float64(http.StatusOK)
			}
			line := wsAccessLine(t, p, method, backend.addr+path)
			if line["status"] != status || line["origin_proto"] != "h1" {
				t.Errorf("access line status %v origin_proto %v, want %v h1", line["status"], line["origin_proto"], status)
			}
		})
	}

	for _, client := range []string{"h1client", "h2client"} {
		t.Run("websocket-h2backend/"+client, func(t *testing.T) {
			ctx := testContext(t, 15*time.Second)
			rt := gatewayTransport(t, p, client, wsRouteH2Host)
			path := "/ws2-" + client
			c, _, ans, err := wsDialWith(t, ctx, rt, wsHostURL(t, p, "wss", wsRouteH2Host, path), nil)
			if err != nil {
				if ans != nil {
					t.Fatalf("dial: %v (proxy answered %d, Proxy-Status %q)", err, ans.status, ans.header.Get("Proxy-Status"))
				}
				t.Fatalf("dial: %v", err)
			}
			if err := c.Write(ctx, websocket.MessageText, []byte(path)); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.Read(ctx); err != nil || string(got) != path {
				t.Fatalf("echo: %q, %v", got, err)
			}
			hs := h2backend.lastHandshake(t)
			if hs.method != http.MethodConnect || hs.protocol != "websocket" || hs.uri != path {
				t.Errorf("backend saw %s %s :protocol %q, want an extended CONNECT for %s", hs.method, hs.uri, hs.protocol, path)
			}
			if v := hs.header.Get("X-Forwarded-For"); v != "127.0.0.1" {
				t.Errorf("backend's handshake had X-Forwarded-For %q, want 127.0.0.1", v)
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Errorf("close handshake: %v", err)
			}
			method := map[string]string{"h1client": "GET", "h2client": "CONNECT"}[client]
			if line := wsAccessLine(t, p, method, h2backend.addr+path); line["origin_proto"] != "h2" {
				t.Errorf("access line origin_proto %v, want h2", line["origin_proto"])
			}
		})
	}
}

// gatewayTransport is a WebSocket client transport that talks to the proxy
// as the origin host (gateway mode): an HTTP/1.1 Upgrade in origin form for
// "h1client", an RFC 8441 extended CONNECT for "h2client".
func gatewayTransport(t *testing.T, p *Proxy, client, host string) wsTransport {
	conf := &tls.Config{RootCAs: p.Roots, ServerName: host}
	if client == "h1client" {
		conf.NextProtos = []string{"http/1.1"}
		return &wsH1Transport{t: t, p: p, tlsConf: conf, originForm: true}
	}
	conf.NextProtos = []string{"h2"}
	return &wsH2Transport{t: t, cc: dialH2With(t, p, conf)}
}

package integration

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsMatrixProxy starts a proxy that may reach loopback origins and trusts
// the test CA that issued cert for wss origins.
func wsMatrixProxy(t *testing.T) (*Proxy, *testCA) {
	t.Helper()
	ca := newTestCA(t)
	p := StartProxy(t, "--allow-private", "--upstream-ca", writeTempFile(t, "origin-ca.pem", ca.pem))
	return p, ca
}

// wsCells is the matrix of issue 4: how the client asks (HTTP/1.1 Upgrade
// in absolute form, RFC 8441 extended CONNECT over h2) x what the origin
// speaks (HTTP/1.1 Upgrade, h2 with RFC 8441) x ws or wss.
func wsCells() []struct{ client, origin, scheme string } {
	var cells []struct{ client, origin, scheme string }
	for _, client := range []string{"h1client", "h2client"} {
		for _, origin := range []string{"h1origin", "h2origin"} {
			for _, scheme := range []string{"ws", "wss"} {
				cells = append(cells, struct{ client, origin, scheme string }{client, origin, scheme})
			}
		}
	}
	return cells
}

// TestWebSocketMatrix echoes messages through the proxy in every cell of
// the matrix, with coder/websocket at both ends, and checks each side of
// the translation: what the origin received, what the client received, and
// the access line's account of how the WebSocket came in and went out.
func TestWebSocketMatrix(t *testing.T) {
	p, ca := wsMatrixProxy(t)
	cert := ca.issue(t)
	for _, cell := range wsCells() {
		t.Run(cell.client+"/"+cell.origin+"/"+cell.scheme, func(t *testing.T) {
			ctx := testContext(t, 20*time.Second)
			cfg := wsOriginConfig{proto: strings.TrimSuffix(cell.origin, "origin")}
			if cell.scheme == "wss" {
				cfg.cert = &cert
			}
			o := startWSOrigin(t, cfg)
			wsLogOnFailure(t, p, o.addr)
			const path = "/echo?room=matrix"
			c, _, ans, err := wsDialVia(t, ctx, p, cell.client, cell.scheme+"://"+o.addr+path, nil)
			if err != nil {
				if ans != nil {
					t.Fatalf("dial: %v (proxy answered %d, Proxy-Status %q)", err, ans.status, ans.header.Get("Proxy-Status"))
				}
				t.Fatalf("dial: %v", err)
			}

			// Text and binary messages, one of them far larger than a
			// frame of the h2 connection (16 KiB) and than a
			// coder/websocket write buffer, so it crosses many DATA frames
			// and TCP segments on the way.
			big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
			msgs := []struct {
				typ  websocket.MessageType
				data []byte
			}{
				{websocket.MessageText, []byte("hello " + cell.client + " -> " + cell.origin)},
				{websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe}},
				{websocket.MessageBinary, big},
			}
			for i, m := range msgs {
				if err := c.Write(ctx, m.typ, m.data); err != nil {
					t.Fatalf("message %d: write: %v", i, err)
				}
				typ, got, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("message %d: read: %v", i, err)
				}
				if typ != m.typ || !bytes.Equal(got, m.data) {
					t.Fatalf("message %d: echo is %v of %d bytes, want %v of %d bytes", i, typ, len(got), m.typ, len(m.data))
				}
			}

			// What went out to the origin: an Upgrade to an h1 origin,
			// an extended CONNECT to an h2 one (RFC 8441 §4), with the
			// client's path and query either way.
			hs := o.lastHandshake(t)
			switch cell.origin {
			case "h1origin":
				if hs.method != http.MethodGet || hs.proto != "HTTP/1.1" || hs.uri != path {
					t.Errorf("origin saw %s %s %s, want GET %s HTTP/1.1", hs.method, hs.uri, hs.proto, path)
				}
				if k := hs.header.Get("Sec-WebSocket-Key"); !wsValidKey(k) {
					t.Errorf("origin saw Sec-WebSocket-Key %q, want base64 of 16 bytes", k)
				}
			case "h2origin":
				if hs.method != http.MethodConnect || hs.proto != "HTTP/2.0" || hs.protocol != "websocket" || hs.uri != path {
					t.Errorf("origin saw %s %s %s :protocol %q, want CONNECT %s HTTP/2.0 :protocol websocket", hs.method, hs.uri, hs.proto, hs.protocol, path)
				}
				if k := hs.header.Get("Sec-WebSocket-Key"); k != "" {
					t.Errorf("extended CONNECT carried Sec-WebSocket-Key %q (RFC 8441 §5: none)", k)
				}
			}
			if v := hs.header.Get("Sec-WebSocket-Version"); v != "13" {
				t.Errorf("origin saw Sec-WebSocket-Version %q, want 13", v)
			}

			// What came back to the client: a 101 for an h1 client
			// (coder/websocket verified its accept), a 200 without the
			// HTTP/1.1 handshake fields for an h2 client (RFC 8441 §5).
			switch cell.client {
			case "h1client":
				if ans.status != http.StatusSwitchingProtocols {
					t.Errorf("proxy answered %d, want 101", ans.status)
				}
			case "h2client":
				if ans.status != http.StatusOK {
					t.Errorf("proxy answered %d, want 200", ans.status)
				}
				for _, k := range []string{"Upgrade", "Connection", "Sec-Websocket-Accept"} {
					if v, ok := ans.header[k]; ok {
						t.Errorf("200 to an extended CONNECT carries %s: %q", k, v)
					}
				}
			}

			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Errorf("close handshake: %v", err)
			}
			end := o.nextEnd(t, 5*time.Second)
			if websocket.CloseStatus(end.err) != websocket.StatusNormalClosure {
				t.Errorf("origin's session ended with %v, want a normal closure", end.err)
			}

			wantMethod, wantStatus := http.MethodGet, float64(http.StatusSwitchingProtocols)
			if cell.client == "h2client" {
				wantMethod, wantStatus = http.MethodConnect, float64(http.StatusOK)
			}
			wantScheme := map[string]string{"ws": "http://", "wss": "https://"}[cell.scheme]
			line := wsAccessLine(t, p, wantMethod, o.addr+path)
			if got, _ := line["target"].(string); got != wantScheme+o.addr+path {
				t.Errorf("access line target %q, want %q", got, wantScheme+o.addr+path)
			}
			if line["status"] != wantStatus {
				t.Errorf("access line status %v, want %v", line["status"], wantStatus)
			}
			if want := strings.TrimSuffix(cell.origin, "origin"); line["origin_proto"] != want {
				t.Errorf("access line origin_proto %v, want %s", line["origin_proto"], want)
			}
			if e, ok := line["error"]; ok {
				t.Errorf("access line has error %v after a clean close", e)
			}
		})
	}
}

// wsValidKey reports base64 of exactly 16 bytes (RFC 6455 §4.1 item 7).
func wsValidKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) == 16
}

// TestWebSocketNegotiation checks that the subprotocol and the
// permessage-deflate parameters the origin chose reach the client
// unchanged, for h1 and h2 clients and origins, and that compressed
// messages (RSV1, RFC 7692 §6) pass through: the proxy relays frames, it
// does not parse them.
func TestWebSocketNegotiation(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	for _, cell := range wsCells() {
		if cell.scheme != "ws" {
			continue // the wss leg adds nothing to header relaying
		}
		t.Run(cell.client+"/"+cell.origin, func(t *testing.T) {
			ctx := testContext(t, 20*time.Second)
			o := startWSOrigin(t, wsOriginConfig{
				proto: strings.TrimSuffix(cell.origin, "origin"),
				accept: &websocket.AcceptOptions{
					Subprotocols:    []string{"chat.v2", "chat.v1"},
					CompressionMode: websocket.CompressionContextTakeover,
				},
			})
			c, _, ans, err := wsDialVia(t, ctx, p, cell.client, "ws://"+o.addr+"/chat", &websocket.DialOptions{
				Subprotocols:    []string{"chat.v1", "chat.v2"},
				CompressionMode: websocket.CompressionContextTakeover,
				HTTPHeader:      http.Header{"Origin": {"https://app.example"}},
			})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			// Compressible and above coder/websocket's threshold: both
			// ends deflate it.
			msg := strings.Repeat("the same words again and again; ", 256)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
				t.Fatalf("compressed echo: %d bytes, %v", len(got), err)
			}

			hs := o.lastHandshake(t)
			// The offer reaches the origin as the client made it.
			for _, k := range []string{"Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Origin"} {
				sent := map[string]string{
					"Sec-Websocket-Protocol":   "chat.v1,chat.v2",
					"Sec-Websocket-Extensions": "permessage-deflate",
					"Origin":                   "https://app.example",
				}[k]
				if got := strings.Join(hs.header.Values(k), ", "); wsNormList(got) != wsNormList(sent) {
					t.Errorf("origin saw %s %q, client sent %q", k, got, sent)
				}
			}
			// The answer reaches the client as the origin made it.
			for _, k := range []string{"Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
				want := hs.answer.Get(k)
				if want == "" {
					t.Fatalf("origin did not answer %s; its answer: %v", k, hs.answer)
				}
				if got := strings.Join(ans.header.Values(k), ", "); got != want {
					t.Errorf("client got %s %q, origin answered %q", k, got, want)
				}
			}
			if got := c.Subprotocol(); got != "chat.v2" {
				t.Errorf("negotiated subprotocol %q, want chat.v2 (the origin's choice)", got)
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Errorf("close handshake: %v", err)
			}
			o.nextEnd(t, 5*time.Second)
		})
	}
}

// wsNormList removes the optional whitespace around list commas (RFC 9110
// §5.6.1), which a relay may rewrite.
func wsNormList(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return strings.Join(parts, ",")
}

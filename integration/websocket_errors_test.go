package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// wsSmuggled is what a broken origin sends after its handshake answer: if
// it ever reaches a client, the proxy made a tunnel it should not have.
const wsSmuggled = "SMUGGLED-BYTES-AFTER-A-REFUSED-HANDSHAKE"

// TestWebSocketBadAccept: an HTTP/1.1 origin whose 101 carries the wrong
// Sec-WebSocket-Accept has not proved it understood the handshake (RFC
// 6455 §4.1, client requirement 4): the proxy answers 502, and none of the
// bytes the origin sends after its 101 reach the client.
func TestWebSocketBadAccept(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	o := startWSOrigin(t, wsOriginConfig{proto: "h1", handler: func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept("not the key the proxy sent") + "\r\n\r\n")
		brw.WriteString(wsSmuggled)
		brw.Flush()
		// Hold the connection until the proxy drops it.
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		_, _ = io.Copy(io.Discard, c)
	}})
	wsLogOnFailure(t, p, o.addr)

	for _, client := range []string{"h1client", "h2client"} {
		t.Run(client, func(t *testing.T) {
			ctx := testContext(t, 15*time.Second)
			_, resp, ans, err := wsDialVia(t, ctx, p, client, "ws://"+o.addr+"/bad-accept", nil)
			if err == nil {
				t.Fatal("dial succeeded through an origin with a wrong Sec-WebSocket-Accept")
			}
			if ans == nil {
				t.Fatalf("no answer from the proxy: %v", err)
			}
			wantRefusal(t, client+" to a wrong accept", &http.Response{StatusCode: ans.status, Header: ans.header}, http.StatusBadGateway, "")
			if resp != nil && resp.Body != nil {
				body, _ := io.ReadAll(resp.Body)
				if bytes.Contains(body, []byte(wsSmuggled)) {
					t.Errorf("the origin's bytes after its bad 101 reached the client: %q", body)
				}
			}
			line := wsAccessLine(t, p, map[string]string{"h1client": "GET", "h2client": "CONNECT"}[client], o.addr+"/bad-accept")
			if line["status"] != float64(http.StatusBadGateway) {
				t.Errorf("access line status %v, want 502", line["status"])
			}
		})
	}
}

// TestWebSocketOriginRefusal: an origin that refuses the handshake (403
// with a body) is answered as it is, status, fields and body, and no tunnel
// follows (RFC 6455 §4.1: anything but 101 fails the handshake; RFC 8441
// §5: anything but 2xx).
func TestWebSocketOriginRefusal(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	const body = "no WebSockets for you\n"
	for _, origin := range []string{"h1origin", "h2origin"} {
		o := startWSOrigin(t, wsOriginConfig{proto: strings.TrimSuffix(origin, "origin"), handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Origin-Says", "forbidden")
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, body)
		}})
		wsLogOnFailure(t, p, o.addr)
		for _, client := range []string{"h1client", "h2client"} {
			t.Run(client+"/"+origin, func(t *testing.T) {
				ctx := testContext(t, 15*time.Second)
				path := "/refused-" + client
				_, resp, ans, err := wsDialVia(t, ctx, p, client, "ws://"+o.addr+path, nil)
				if err == nil {
					t.Fatal("dial succeeded through a refusing origin")
				}
				if ans == nil || resp == nil {
					t.Fatalf("no answer from the proxy: %v", err)
				}
				if ans.status != http.StatusForbidden {
					t.Fatalf("status %d (Proxy-Status %q), want the origin's 403", ans.status, ans.header.Get("Proxy-Status"))
				}
				if got := ans.header.Get("X-Origin-Says"); got != "forbidden" {
					t.Errorf("X-Origin-Says %q, want the origin's field relayed", got)
				}
				got, _ := io.ReadAll(resp.Body)
				if string(got) != body {
					t.Errorf("body %q, want the origin's %q", got, body)
				}
				line := wsAccessLine(t, p, map[string]string{"h1client": "GET", "h2client": "CONNECT"}[client], o.addr+path)
				if line["status"] != float64(http.StatusForbidden) {
					t.Errorf("access line status %v, want 403", line["status"])
				}
			})
		}
	}
}

// TestWebSocketCloseHandshake follows a client-initiated close (RFC 6455
// §5.5.1, §7.1.2) frame by frame: the client's close frame reaches the
// origin, the origin's reply reaches the client, and the origin's end of
// the connection (FIN, or END_STREAM from an h2 origin) arrives at the
// client as END_STREAM or FIN, after which the client ends its side. The
// tunnel then ends without an error.
func TestWebSocketCloseHandshake(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	for _, cell := range wsCells() {
		if cell.scheme != "ws" {
			continue
		}
		t.Run(cell.client+"/"+cell.origin, func(t *testing.T) {
			o := startWSOrigin(t, wsOriginConfig{proto: strings.TrimSuffix(cell.origin, "origin")})
			wsLogOnFailure(t, p, o.addr)
			s := wsOpenRaw(t, p, cell.client, o.addr, "/close")
			s.echoOnce(t, "before closing")

			if err := wsWriteFrame(s.w, wsOpClose, wsClosePayload(1000, "bye")); err != nil {
				t.Fatalf("sending close: %v", err)
			}
			f, err := wsReadFrame(s.r)
			if err != nil {
				t.Fatalf("reading the origin's close frame: %v", err)
			}
			if f.op != wsOpClose || len(f.payload) < 2 {
				t.Fatalf("got frame op %#x %q, want a close frame with a status", f.op, f.payload)
			}
			if code := binary.BigEndian.Uint16(f.payload); code != 1000 {
				t.Errorf("origin's close status %d, want 1000", code)
			}
			// §7.1.1: the server closes the TCP connection first; through
			// the proxy that is END_STREAM (h2 client) or FIN (h1).
			done := make(chan error, 1)
			go func() {
				rest, err := io.ReadAll(s.r)
				if err == nil && len(rest) > 0 {
					err = errors.New("bytes after the close frame: " + string(truncate(rest)))
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("after the close frames: want a clean end of stream, got %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no end of stream within 5s of the close handshake")
			}
			s.close()

			end := o.nextEnd(t, 5*time.Second)
			var ce websocket.CloseError
			if !errors.As(end.err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "bye" {
				t.Errorf("origin's session ended with %v, want the client's close 1000 \"bye\"", end.err)
			}
			method := map[string]string{"h1client": "GET", "h2client": "CONNECT"}[cell.client]
			line := wsAccessLine(t, p, method, o.addr+"/close")
			if e, ok := line["error"]; ok {
				t.Errorf("access line has error %v after a completed close handshake", e)
			}
		})
	}
}

// TestWebSocketClientReset: when the client goes away without a close
// handshake (RST_STREAM from an h2 client, a closed connection from an
// h1 client), the proxy closes the origin's side promptly (RFC 9113 §8.5:
// errors on a CONNECT stream are passed on to its TCP connection, and back),
// rather than leaving the origin holding a dead WebSocket until some idle
// timeout.
func TestWebSocketClientReset(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	for _, cell := range wsCells() {
		if cell.scheme != "ws" {
			continue
		}
		t.Run(cell.client+"/"+cell.origin, func(t *testing.T) {
			o := startWSOrigin(t, wsOriginConfig{proto: strings.TrimSuffix(cell.origin, "origin")})
			wsLogOnFailure(t, p, o.addr)
			s := wsOpenRaw(t, p, cell.client, o.addr, "/reset")
			s.echoOnce(t, "still here")
			resetAt := time.Now()
			s.reset()
			end := o.nextEnd(t, 5*time.Second)
			if d := end.at.Sub(resetAt); d > 2*time.Second {
				t.Errorf("origin noticed the client's reset after %v, want < 2s", d)
			}
			var ce websocket.CloseError
			if errors.As(end.err, &ce) {
				t.Errorf("origin's session ended with a close frame %v; nobody sent one", ce)
			}
		})
	}
}

// TestWebSocketHeaderInjection: handshake fields are validated before
// anything is written upstream. A value with CR, LF or NUL could split or
// end a header line on the origin connection; a Sec-WebSocket-Protocol
// that is not a list of tokens (RFC 6455 §4.1 item 10) is malformed. Each
// is refused with 400 (or, over h2, a stream error when the front end
// itself finds the field malformed, RFC 9113 §8.2.1), and the origin sees
// no connection at all.
func TestWebSocketHeaderInjection(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	o := startWSOrigin(t, wsOriginConfig{proto: "h1"})
	wsLogOnFailure(t, p, o.addr)
	// lineEnd marks values that HTTP/1.1 cannot carry inside one field:
	// there CRLF and bare LF end the line (RFC 9112 §2.2), so they only
	// inject over h2, whose HPACK strings hold any byte.
	cases := []struct {
		name, field, value string
		lineEnd            bool
	}{
		{"protocol CRLF", "Sec-WebSocket-Protocol", "chat\r\nX-Injected: 1", true},
		{"protocol bare CR", "Sec-WebSocket-Protocol", "chat\rX-Injected: 1", false},
		{"protocol bare LF", "Sec-WebSocket-Protocol", "chat\nX-Injected: 1", true},
		{"protocol NUL", "Sec-WebSocket-Protocol", "chat\x00evil", false},
		{"extensions CRLF", "Sec-WebSocket-Extensions", "permessage-deflate\r\nX-Injected: 1", true},
		{"extensions NUL", "Sec-WebSocket-Extensions", "permessage-deflate; x=\x00", false},
		{"origin CRLF", "Origin", "https://a.example\r\nX-Injected: 1", true},
		{"origin bare CR", "Origin", "https://a.example\rX-Injected: 1", false},
		{"protocol not tokens (slash)", "Sec-WebSocket-Protocol", "chat/1.0", false},
		{"protocol not tokens (space)", "Sec-WebSocket-Protocol", "chat v2", false},
		{"protocol not tokens (quoted)", "Sec-WebSocket-Protocol", `"chat"`, false},
		{"protocol empty element", "Sec-WebSocket-Protocol", "chat,,v2", false},
		{"extensions not tokens", "Sec-WebSocket-Extensions", "permessage deflate", false},
	}
	t.Run("h1client", func(t *testing.T) {
		for _, tc := range cases {
			if tc.lineEnd {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				c := dialH1(t, p)
				c.send(t, []byte("GET http://"+o.addr+"/inject HTTP/1.1\r\nHost: "+o.addr+
					"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+wsNewKey()+
					"\r\n"+tc.field+": "+tc.value+"\r\n\r\n"))
				resp := c.response(t, http.MethodGet)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s %q: status %d, want 400", tc.field, tc.value, resp.StatusCode)
				}
			})
		}
	})
	t.Run("h2client", func(t *testing.T) {
		fc := dialH2Frames(t, p)
		wsWaitExtendedConnect(t, fc)
		id := uint32(1)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				status, rst := wsRawExtendedConnect(t, fc, id, o.addr, "/inject", [][2]string{
					{"sec-websocket-version", "13"}, {strings.ToLower(tc.field), tc.value},
				})
				id += 2
				if rst == nil && status != "400" {
					t.Errorf("%s %q: status %s, want 400 or a stream error", tc.field, tc.value, status)
				}
				if rst != nil {
					t.Logf("%s %q: RST_STREAM %v", tc.field, tc.value, rst.ErrCode)
				}
			})
		}
	})
	if n := o.accepted.Load(); n != 0 {
		t.Errorf("the origin accepted %d connections; a refused handshake must not reach it", n)
	}
}

// wsWaitExtendedConnect reads the proxy's first SETTINGS and checks that
// it allows extended CONNECT (RFC 8441 §3: SETTINGS_ENABLE_CONNECT_PROTOCOL
// = 1); a client must not send one before it has seen that.
func wsWaitExtendedConnect(t testing.TB, fc *h2FrameConn) {
	t.Helper()
	for {
		f, err := fc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the proxy's SETTINGS: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		_ = fc.fr.WriteSettingsAck()
		if v, ok := sf.Value(http2.SettingEnableConnectProtocol); !ok || v != 1 {
			t.Fatalf("proxy's SETTINGS: ENABLE_CONNECT_PROTOCOL = %d (present %v), want 1", v, ok)
		}
		return
	}
}

// wsRawExtendedConnect sends an extended CONNECT for ws://authority+path
// with extra fields exactly as given (Go's client would refuse the bad
// ones) and returns the response status, or the RST_STREAM that refused
// the request. The stream is then reset by us if it is still open.
func wsRawExtendedConnect(t testing.TB, fc *h2FrameConn, id uint32, authority, path string, extra [][2]string) (string, *http2.RSTStreamFrame) {
	t.Helper()
	fc.buf.Reset()
	for _, f := range append([][2]string{
		{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"},
		{":authority", authority}, {":path", path},
	}, extra...) {
		_ = fc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fc.buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		switch f := fc.next(t).(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				if !f.StreamEnded() {
					_ = fc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
				}
				return f.PseudoValue("status"), nil
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", f
			}
		}
	}
}

// TestWebSocketBadClientHandshake: an opening handshake the proxy cannot
// vouch for is refused before any origin is contacted. Over HTTP/1.1 the
// key must be base64 of 16 bytes (RFC 6455 §4.1 item 7; the proxy answers
// it itself when the origin speaks RFC 8441); the version must be 13 on
// both protocols (RFC 6455 §4.1 item 9, RFC 8441 §5). A server that does
// not speak the version may answer 426 with the versions it does (RFC
// 6455 §4.4); 400 is the general refusal.
func TestWebSocketBadClientHandshake(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	o := startWSOrigin(t, wsOriginConfig{proto: "h2"})
	wsLogOnFailure(t, p, o.addr)
	h1 := func(key, version string) string {
		return "GET http://" + o.addr + "/bad HTTP/1.1\r\nHost: " + o.addr +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: " + version +
			"\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"
	}
	refused := func(t *testing.T, status int) {
		t.Helper()
		if status != http.StatusBadRequest && status != http.StatusUpgradeRequired {
			t.Errorf("status %d, want 400 (or 426)", status)
		}
	}
	for name, raw := range map[string]string{
		"h1client/short key":     h1("c2hvcnQ=", "13"),
		"h1client/key not b64":   h1("not base64 at all!!!!!==", "13"),
		"h1client/no key":        strings.Replace(h1("x", "13"), "Sec-WebSocket-Key: x\r\n", "", 1),
		"h1client/version 8":     h1(wsNewKey(), "8"),
		"h1client/empty version": h1(wsNewKey(), ""),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialH1(t, p)
			c.send(t, []byte(raw))
			resp := c.response(t, http.MethodGet)
			resp.Body.Close()
			refused(t, resp.StatusCode)
		})
	}
	t.Run("h2client/version 8", func(t *testing.T) {
		fc := dialH2Frames(t, p)
		wsWaitExtendedConnect(t, fc)
		status, rst := wsRawExtendedConnect(t, fc, 1, o.addr, "/bad", [][2]string{{"sec-websocket-version", "8"}})
		if rst != nil {
			t.Fatalf("RST_STREAM %v, want a 400 response", rst.ErrCode)
		}
		code, _ := strconv.Atoi(status)
		refused(t, code)
	})
	if n := o.accepted.Load(); n != 0 {
		t.Errorf("the origin accepted %d connections; a refused handshake must not reach it", n)
	}
}

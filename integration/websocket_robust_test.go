package integration

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketSlowH2COrigin: the proxy gives a ws:// origin 2 s to show
// that it speaks h2c with RFC 8441 before falling back to an HTTP/1.1
// Upgrade, and remembers the answer per origin. That bound is for the
// probe (preface and SETTINGS, RFC 9113 §3.4, RFC 8441 §3), not for the
// application behind the origin: an h2c-only origin that takes 3 s to
// accept a WebSocket must still get it over extended CONNECT, and one slow
// answer must not get the origin remembered as HTTP/1.1 (after which every
// WebSocket to it would fail for the memory's ten minutes).
func TestWebSocketSlowH2COrigin(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	o := startWSOrigin(t, wsOriginConfig{proto: "h2", delayFirst: 3 * time.Second})
	wsLogOnFailure(t, p, o.addr)
	for _, step := range []string{"slow", "fast"} {
		ctx := testContext(t, 15*time.Second)
		c, _, ans, err := wsDialVia(t, ctx, p, "h2client", "ws://"+o.addr+"/"+step, nil)
		if err != nil {
			if ans != nil {
				t.Errorf("%s handshake: %v (proxy answered %d, Proxy-Status %q)", step, err, ans.status, ans.header.Get("Proxy-Status"))
			} else {
				t.Errorf("%s handshake: %v", step, err)
			}
			continue
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(step)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.Read(ctx); err != nil || string(got) != step {
			t.Fatalf("%s echo: %q, %v", step, got, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		if line := wsAccessLine(t, p, http.MethodConnect, o.addr+"/"+step); line["origin_proto"] != "h2" {
			t.Errorf("%s: access line origin_proto %v, want h2", step, line["origin_proto"])
		}
	}
}

// TestWebSocketClientGivesUpDuringHandshake: a client that resets its
// stream (or closes its connection) while the origin has not yet answered
// the Upgrade must not leave the proxy holding the origin connection: it
// is closed promptly (< 2 s), as after the handshake.
func TestWebSocketClientGivesUpDuringHandshake(t *testing.T) {
	p, _ := wsMatrixProxy(t)
	type upgrade struct{ eof chan time.Time }
	upgrades := make(chan upgrade, 4)
	// An HTTP/1.1 origin that reads the Upgrade and never answers. The
	// h2c probe's preface gets the connection closed at once, as an
	// HTTP/1.1-only server would.
	origin := startTarget(t, func(c *net.TCPConn) {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil || req.Method == "PRI" {
			return
		}
		u := upgrade{eof: make(chan time.Time, 1)}
		upgrades <- u
		_, _ = io.Copy(io.Discard, c)
		u.eof <- time.Now()
	})
	wsLogOnFailure(t, p, origin.Addr())

	waitUpgrade := func(t *testing.T) upgrade {
		t.Helper()
		select {
		case u := <-upgrades:
			return u
		case <-time.After(10 * time.Second):
			t.Fatal("the Upgrade never reached the origin")
			return upgrade{}
		}
	}
	checkClosed := func(t *testing.T, u upgrade, at time.Time) {
		t.Helper()
		select {
		case eof := <-u.eof:
			if d := eof.Sub(at); d > 2*time.Second {
				t.Errorf("origin connection closed %v after the client left, want < 2s", d)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("origin connection still open 5s after the client left mid-handshake")
		}
	}

	t.Run("h2client", func(t *testing.T) {
		cc := dialH2(t, p)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			hdr := http.Header{":protocol": {"websocket"}, "Sec-Websocket-Version": {"13"}}
			if st, err := wsExtendedConnect(ctx, cc, &url.URL{Scheme: "http", Host: origin.Addr(), Path: "/never"}, hdr); err == nil {
				st.resp.Body.Close()
			}
		}()
		u := waitUpgrade(t)
		at := time.Now()
		cancel() // RST_STREAM(CANCEL) while the response is pending
		<-done
		checkClosed(t, u, at)
	})
	t.Run("h1client", func(t *testing.T) {
		c := dialH1(t, p)
		c.send(t, []byte("GET http://"+origin.Addr()+"/never HTTP/1.1\r\nHost: "+origin.Addr()+
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+wsNewKey()+"\r\n\r\n"))
		u := waitUpgrade(t)
		at := time.Now()
		c.Close()
		checkClosed(t, u, at)
	})
}

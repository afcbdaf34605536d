package integration

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// This file holds a minimal RFC 6455 frame codec and hand-made handshakes,
// for the tests that must see single frames and the stream's end: close
// handshakes and resets.

// WebSocket opcodes (RFC 6455 §5.2).
const (
	wsOpText  = 0x1
	wsOpClose = 0x8
)

// wsWriteFrame writes one final frame from a client: masked with a fresh
// key, as §5.3 requires of every client frame.
func wsWriteFrame(w io.Writer, op byte, payload []byte) error {
	hdr := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xffff:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = binary.BigEndian.AppendUint64(append(hdr, 0x80|127), uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	masked := make([]byte, len(payload))
	for i, b := range payload {
		masked[i] = b ^ mask[i%4]
	}
	_, err := w.Write(append(hdr, masked...))
	return err
}

// wsFrame is one frame as read.
type wsFrame struct {
	fin     bool
	op      byte
	payload []byte
}

// wsReadFrame reads one frame from a server, which never masks (§5.1).
func wsReadFrame(r io.Reader) (wsFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return wsFrame{}, err
	}
	if h[1]&0x80 != 0 {
		return wsFrame{}, errors.New("server frame is masked (RFC 6455 §5.1)")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return wsFrame{}, fmt.Errorf("frame of %d bytes", n)
	}
	f := wsFrame{fin: h[0]&0x80 != 0, op: h[0] & 0x0f, payload: make([]byte, n)}
	_, err := io.ReadFull(r, f.payload)
	return f, err
}

// wsClosePayload is a close frame's body: status code and reason (§5.5.1).
func wsClosePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// wsRawSession is the client end of a WebSocket handshaken by hand.
type wsRawSession struct {
	r     io.Reader
	w     io.Writer
	close func() // ends our sending side: END_STREAM, or TLS close_notify + FIN
	reset func() // RST_STREAM, or closing the TCP connection
}

// wsOpenRaw performs the opening handshake through the proxy without a
// WebSocket library and returns the raw stream: an RFC 8441 extended
// CONNECT ("h2client") or an absolute-form Upgrade ("h1client") to
// ws://authority/path.
func wsOpenRaw(t testing.TB, p *Proxy, client, authority, path string) *wsRawSession {
	t.Helper()
	switch client {
	case "h2client":
		cc := dialH2(t, p)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		hdr := http.Header{":protocol": {"websocket"}, "Sec-Websocket-Version": {"13"}}
		st, err := wsExtendedConnect(ctx, cc, &url.URL{Scheme: "http", Host: authority, Path: path}, hdr)
		if err != nil {
			t.Fatalf("extended CONNECT: %v", err)
		}
		resp := st.resp
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("extended CONNECT: status %d, Proxy-Status %q", resp.StatusCode, resp.Header.Get("Proxy-Status"))
		}
		// A reset is RST_STREAM(CANCEL): x/net sends it when the
		// response body is closed before END_STREAM. (Cancelling the
		// context alone does not wake a writer blocked on the request
		// body, so no frame would go out.)
		reset := func() {
			cancel()
			resp.Body.Close()
		}
		return &wsRawSession{r: resp.Body, w: st.pw, close: func() { st.closeWrite(2 * time.Second) }, reset: reset}
	case "h1client":
		c := dialH1(t, p)
		key := wsNewKey()
		c.send(t, []byte("GET http://"+authority+path+" HTTP/1.1\r\nHost: "+authority+
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n"))
		resp := c.response(t, http.MethodGet)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("Upgrade: status %d, Proxy-Status %q", resp.StatusCode, resp.Header.Get("Proxy-Status"))
		}
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
			t.Fatalf("Upgrade: Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
		}
		return &wsRawSession{r: c, w: c.Conn, close: func() { c.closeWrite(t) }, reset: func() { c.Close() }}
	}
	t.Fatalf("unknown client kind %q", client)
	return nil
}

// echoOnce sends a text message and expects it back.
func (s *wsRawSession) echoOnce(t testing.TB, msg string) {
	t.Helper()
	if err := wsWriteFrame(s.w, wsOpText, []byte(msg)); err != nil {
		t.Fatalf("sending a text frame: %v", err)
	}
	f, err := wsReadFrame(s.r)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if f.op != wsOpText || !f.fin || string(f.payload) != msg {
		t.Fatalf("echo: got frame op %#x fin %v %q, want a final text frame %q", f.op, f.fin, f.payload, msg)
	}
}

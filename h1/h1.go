package h1

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/h2proxy/h2proxy/tunnel"
)

// AcceptConnect answers an HTTP/1.1 CONNECT with 200 and takes over the
// client connection as one end of a tunnel (RFC 9110 §9.3.6). Bytes the
// client sent right behind the request (a TLS ClientHello, typically) are
// already in net/http's buffer; they are the first bytes the tunnel reads.
func AcceptConnect(w http.ResponseWriter) (tunnel.Conn, error) {
	return hijack(w, "HTTP/1.1 200 Connection established\r\n\r\n")
}

// AcceptUpgrade relays the origin's 101 Switching Protocols (RFC 9110
// §15.2.2) to the client and takes over the client connection.
func AcceptUpgrade(w http.ResponseWriter, resp *http.Response) (tunnel.Conn, error) {
	head := fmt.Sprintf("HTTP/1.1 %03d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	var b []byte
	b = append(b, head...)
	for k, vs := range resp.Header {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	return hijack(w, string(b))
}

func hijack(w http.ResponseWriter, head string) (tunnel.Conn, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	c = unwrap(c) // the tunnel wants the real TCP or TLS connection
	// net/http sets deadlines for reading the request; a tunnel lives on.
	_ = c.SetDeadline(noDeadline)
	if _, err := c.Write([]byte(head)); err != nil {
		c.Close()
		return nil, err
	}
	return tunnel.NetConn(c, buffered(brw.Reader)), nil
}

// Refuse prepares w for a refusal of a CONNECT or Upgrade: the connection is
// closed after the response, so that bytes the client pipelined behind the
// request (meant for the tunnel) are never read as HTTP requests.
func Refuse(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}

// RoundTrip sends req on the upstream connection c (already dialled, TLS
// done) and reads the response head. The returned tunnel.Conn reads c
// through the response reader, so bytes the origin sent right after its 101
// are not lost.
func RoundTrip(c net.Conn, req *http.Request) (*http.Response, tunnel.Conn, error) {
	if err := req.Write(c); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, nil, nil
	}
	return resp, tunnel.NetConn(c, buffered(br)), nil
}

func buffered(br *bufio.Reader) []byte {
	if br == nil || br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}

var noDeadline = time.Time{}

package h2

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"

	"golang.org/x/net/http2"

	"github.com/h2proxy/h2proxy/tunnel"
)

// ExtendedConnect opens an RFC 8441 extended CONNECT stream on conn, a
// connection to an origin that negotiated h2 by ALPN (or cleartext, for
// h2c with prior knowledge), and returns the origin's response. hdr must
// carry ":protocol". On a 2xx the stream is returned as a tunnel.Conn that
// owns conn; otherwise the caller reads resp.Body and closes conn. An
// origin that does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC
// 8441 §3) makes this fail before anything is sent.
func ExtendedConnect(ctx context.Context, conn net.Conn, u *url.URL, hdr http.Header) (*http.Response, tunnel.Conn, error) {
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(conn)
	if err != nil {
		return nil, nil, err
	}
	// The stream outlives ctx, which only bounds the handshake: cancel
	// resets the stream later (Abort).
	streamCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method: http.MethodConnect, URL: u, Host: u.Host, Header: hdr,
		Body: pr, ContentLength: -1, Proto: "HTTP/2.0", ProtoMajor: 2,
	}).WithContext(streamCtx)
	resp, err := cc.RoundTrip(req)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		cc.Close()
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		pw.Close()
		return resp, nil, nil
	}
	return resp, &upstreamStream{body: resp.Body, pw: pw, cancel: cancel, cc: cc}, nil
}

// upstreamStream is an extended CONNECT stream to an origin.
type upstreamStream struct {
	body   io.ReadCloser
	pw     *io.PipeWriter
	cancel context.CancelFunc
	cc     *http2.ClientConn
}

func (s *upstreamStream) Read(p []byte) (int, error)  { return s.body.Read(p) }
func (s *upstreamStream) Write(p []byte) (int, error) { return s.pw.Write(p) }

// CloseWrite sends END_STREAM; the origin's data keeps coming.
func (s *upstreamStream) CloseWrite() error { return s.pw.Close() }

func (s *upstreamStream) Close() error {
	s.pw.Close()
	s.body.Close()
	s.cancel()
	return s.cc.Close()
}

// Abort resets the stream (RST_STREAM CANCEL) and drops the connection.
func (s *upstreamStream) Abort(error) {
	s.cancel()
	s.pw.CloseWithError(io.ErrClosedPipe)
	s.cc.Close()
}

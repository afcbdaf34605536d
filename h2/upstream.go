package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http2"

	"github.com/h2proxy/h2proxy/tunnel"
)

// ErrNoExtendedConnect means the origin cannot take an RFC 8441 extended
// CONNECT: it does not speak HTTP/2 (no answer to a PING within the
// probe time), or it does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL
// (RFC 8441 §3), or it refused the stream before answering.
var ErrNoExtendedConnect = errors.New("origin does not take extended CONNECT")

// ExtendedConnect opens an RFC 8441 extended CONNECT stream on conn, a
// connection to an origin that negotiated h2 by ALPN (or cleartext, for
// h2c with prior knowledge), and returns the origin's response. hdr must
// carry ":protocol". probe bounds finding out whether the origin speaks
// HTTP/2 at all (a cleartext origin may only speak HTTP/1.1); ctx bounds
// the whole handshake. On a 2xx the stream is returned as a tunnel.Conn
// that owns conn; otherwise the caller reads resp.Body and closes conn.
func ExtendedConnect(ctx context.Context, conn net.Conn, u *url.URL, hdr http.Header, probe time.Duration) (*http.Response, tunnel.Conn, error) {
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(conn)
	if err != nil {
		return nil, nil, err
	}
	pctx, pcancel := context.WithTimeout(ctx, probe)
	err = cc.Ping(pctx) // an HTTP/2 peer answers; its SETTINGS come first
	pcancel()
	if err != nil {
		cc.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, ErrNoExtendedConnect
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
		if ctx.Err() == nil && !isNetError(err) {
			// The peer speaks HTTP/2 but would not take the stream (no
			// SETTINGS_ENABLE_CONNECT_PROTOCOL, or a refusal).
			return nil, nil, ErrNoExtendedConnect
		}
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

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

package h2

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/h2proxy/h2proxy/tunnel"
)

// Config holds the HTTP/2 settings of the front end. The zero value is usable.
type Config struct {
	// MaxConcurrentStreams bounds the streams (and so the tunnels) one
	// client connection may have open at once. Default 1000.
	MaxConcurrentStreams int
}

// Configure makes srv speak HTTP/2 on TLS connections that negotiated "h2"
// by ALPN, beside HTTP/1.1.
func Configure(srv *http.Server, cfg Config) {
	if cfg.MaxConcurrentStreams <= 0 {
		cfg.MaxConcurrentStreams = 1000
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams: cfg.MaxConcurrentStreams,
		// One tunnel should be able to fill a fast link without the whole
		// connection's window being taken by one slow reader.
		MaxReceiveBufferPerStream:     1 << 20,
		MaxReceiveBufferPerConnection: 16 << 20,
	}
}

// Is reports whether r arrived over HTTP/2.
func Is(r *http.Request) bool { return r.ProtoMajor == 2 }

// Protocol returns the :protocol pseudo-header of an extended CONNECT
// (RFC 8441 §4), or "".
func Protocol(r *http.Request) string {
	if v := r.Header[":protocol"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Accept answers the CONNECT stream r with 200 and hdr and returns the stream
// as one end of a tunnel: DATA frames in both directions (RFC 9113 §8.5).
// The handler must not return before the tunnel is closed.
func Accept(w http.ResponseWriter, r *http.Request, hdr http.Header) (tunnel.Conn, error) {
	for k, v := range hdr {
		w.Header()[k] = v
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return nil, err
	}
	return &stream{w: w, rc: rc, body: r.Body}, nil
}

// stream adapts a net/http HTTP/2 handler to tunnel.Conn.
//
// net/http ends a stream only when its handler returns, and then also resets
// the request side (RST_STREAM NO_ERROR). So CloseWrite cannot send a lone
// END_STREAM: it ends the read side too, which makes the splice finish and
// the handler return, and the client gets END_STREAM after all data.
type stream struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	body     io.ReadCloser
	wmu      sync.Mutex
	ended    atomic.Bool
	aborted  atomic.Bool
	closeOne sync.Once
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err != nil && s.ended.Load() {
		// Our own CloseWrite broke the read; report a clean end.
		return n, io.EOF
	}
	return n, err
}

// Write sends p as DATA and flushes at once: a tunnel carries interactive
// protocols, so nothing may wait in the handler's buffer.
func (s *stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ended.Load() {
		return 0, errors.New("h2: write after CloseWrite")
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	return n, err
}

func (s *stream) CloseWrite() error {
	s.ended.Store(true)
	return s.closeBody()
}

func (s *stream) Close() error { return s.closeBody() }

// Abort makes the handler reset the stream when it returns (see Aborted);
// net/http can only reset with INTERNAL_ERROR, not CONNECT_ERROR.
func (s *stream) Abort(error) {
	s.aborted.Store(true)
	_ = s.closeBody()
}

func (s *stream) closeBody() error {
	s.closeOne.Do(func() { _ = s.body.Close() })
	return nil
}

// Finish must be deferred by the handler that called Accept, after the
// tunnel ended: a tunnel that failed is reset (RST_STREAM) rather than
// ended with END_STREAM, so the client never mistakes a broken tunnel for a
// complete one.
func Finish(c tunnel.Conn) {
	if s, ok := c.(*stream); ok && s.aborted.Load() {
		panic(http.ErrAbortHandler)
	}
}

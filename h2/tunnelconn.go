package h2

import (
	"context"
	"errors"
	"net/http"

	"golang.org/x/net/http2"

	"github.com/h2proxy/h2proxy/tunnel"
)

// tunnelConn is a CONNECT stream as one end of a tunnel (RFC 9113 §8.5,
// RFC 8441 §5): DATA both ways, END_STREAM as the clean end of a
// direction, RST_STREAM as failure.
type tunnelConn struct {
	s *stream

	// detached: the handler may return before the tunnel ends (Detach);
	// the first Close or Abort then does what the handler's return does
	// otherwise: cancel the stream's context and free the handler slot.
	detached bool
	released bool // guarded by s.c.mu
}

// acceptTunnel answers the CONNECT with 200 and hdr, without END_STREAM,
// and returns the stream as a tunnel.Conn. The handler stays in ServeHTTP
// while the tunnel lives.
func (rw *responseWriter) acceptTunnel(hdr http.Header) (tunnel.Conn, error) {
	if rw.req.Method != http.MethodConnect {
		return nil, errors.New("h2: acceptTunnel on a non-CONNECT request")
	}
	if rw.status != 0 || rw.tunnel != nil || rw.done {
		return nil, errors.New("h2: acceptTunnel after the response started")
	}
	for k, v := range hdr {
		rw.hdr[k] = v
	}
	rw.status = http.StatusOK
	rw.sentHeader = true
	if err := rw.s.pushHeaders(true, responseFields(http.StatusOK, rw.hdr), false); err != nil {
		return nil, err
	}
	rw.tunnel = &tunnelConn{s: rw.s}
	return rw.tunnel, nil
}

// Read returns request DATA; io.EOF after END_STREAM; a *StreamError after
// the client reset the stream.
func (t *tunnelConn) Read(p []byte) (int, error) { return t.s.read(p) }

// ReadLazy reads as Read does, but takes its buffer from buf only once
// there is something to read (tunnel.LazyReader): a tunnel waiting for
// the client holds no copy buffer.
func (t *tunnelConn) ReadLazy(idle func(), buf func() []byte) (int, error) {
	return t.s.readLazy(idle, buf)
}

// SetPush lets the connection's reader goroutine write the tunnel's
// upload to the target itself while the tunnel waits (tunnel.Pusher).
func (t *tunnelConn) SetPush(push func([][]byte, bool) int) {
	c := t.s.c
	c.mu.Lock()
	t.s.push = push
	c.mu.Unlock()
}

// Pull lets the connection's writer read the tunnel's download from its
// source (tunnel.Puller).
func (t *tunnelConn) Pull(read func([][]byte) (int, error)) error { return t.s.pull(read) }

// Write sends p as DATA under flow control; it waits at most WriteTimeout
// for a client that keeps the window shut.
func (t *tunnelConn) Write(p []byte) (int, error) { return t.s.write(p) }

// WriteSize is the DATA payload that, with its 9-byte frame header, fills
// one TLS record (tunnel.WriteSizer): a write of a multiple of it goes out
// as whole records whatever frame size the client allows, where a 32 KiB
// write would need a third, 9-byte record (and syscall) for the headers.
func (t *tunnelConn) WriteSize() int { return tlsRecord - frameHeaderLen }

// Headroom and WriteHeadroom let Splice leave room for the DATA frame
// header in front of what it reads (tunnel.HeadroomWriter), so that an
// idle connection writes frame and data from Splice's buffer as they are.
func (t *tunnelConn) Headroom() int { return frameHeaderLen }

func (t *tunnelConn) WriteHeadroom(b []byte) (int, error) { return t.s.writeFramed(b) }

// CloseWrite sends END_STREAM; reading goes on (half-close).
func (t *tunnelConn) CloseWrite() error { return t.s.end() }

// Close releases the stream after a clean end: END_STREAM if not yet sent,
// and RST_STREAM(NO_ERROR) if the client is still sending.
func (t *tunnelConn) Close() error {
	err := t.s.finishOut(nil)
	t.release()
	return err
}

// release ends a detached tunnel's hold on its stream, once.
func (t *tunnelConn) release() {
	c := t.s.c
	c.mu.Lock()
	first := t.detached && !t.released
	t.released = true
	c.mu.Unlock()
	if first {
		t.s.cancel(errHandlerDone)
		c.handlerDone()
	}
}

// Abort resets the stream with the code RFC 9113 §8.5 asks for: the
// target failed -> CONNECT_ERROR; the client went away, idle timeout or
// cancellation -> CANCEL; anything else -> INTERNAL_ERROR.
func (t *tunnelConn) Abort(cause error) {
	c := t.s.c
	c.mu.Lock()
	c.resetStream(t.s, abortCode(cause))
	c.mu.Unlock()
	t.release()
}

// detach lets the handler return while the tunnel lives on (see Detach).
func (rw *responseWriter) detach() error {
	if rw.tunnel == nil || rw.done {
		return errors.New("h2: Detach without an accepted tunnel")
	}
	rw.tunnel.detached = true
	return nil
}

func abortCode(cause error) http2.ErrCode {
	var te *tunnel.Error
	switch {
	case errors.As(cause, &te) && te.Side == tunnel.Target:
		return http2.ErrCodeConnect
	case errors.As(cause, &te), errors.Is(cause, tunnel.ErrIdle),
		errors.Is(cause, context.Canceled), errors.Is(cause, context.DeadlineExceeded):
		return http2.ErrCodeCancel
	}
	return http2.ErrCodeInternal
}

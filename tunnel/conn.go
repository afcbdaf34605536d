package tunnel

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
)

// Conn is one end of a tunnel.
type Conn interface {
	io.Reader
	io.Writer
	// CloseWrite ends the write direction cleanly (TCP FIN, HTTP/2
	// END_STREAM) while reads may go on.
	CloseWrite() error
	// Close releases the connection after a clean end.
	Close() error
	// Abort tears the connection down because of cause: TCP RST, or
	// RST_STREAM with a code chosen from cause (see Error).
	Abort(cause error)
}

// WriteSizer is implemented by a Conn whose writes cost least in
// multiples of some size: an HTTP/2 stream whose DATA frames each fill a
// TLS record exactly. Splice then reads in multiples of it while data
// streams, so that no write ends in a short extra record.
type WriteSizer interface {
	WriteSize() int
}

// HeadroomWriter is implemented by a Conn that puts a header of its own
// in front of what it writes (an HTTP/2 DATA frame header). Splice then
// reads bulk data Headroom() bytes into its buffer and calls WriteHeadroom
// with the buffer from its start: the Conn may fill b[:Headroom()] with its
// header and write header and data together, without copying the data,
// and may overwrite data it has already written with the header of the
// next piece. It writes b[Headroom():] as Write would and returns how much
// of that it wrote; b's contents are undefined afterwards.
type HeadroomWriter interface {
	Headroom() int
	WriteHeadroom(b []byte) (int, error)
}

// LazyReader is implemented by a Conn that can wait for data before it is
// given a buffer to read into (an HTTP/2 stream, whose DATA is buffered
// by the connection). Splice then holds no copy buffer while a direction
// waits. ReadLazy blocks until data, the end or an error is there,
// calling idle first if it has to wait at all, and then reads into the
// buffer that buf returns.
type LazyReader interface {
	ReadLazy(idle func(), buf func() []byte) (int, error)
}

// Pusher is implemented by a Conn whose data arrives on a goroutine of
// its own (an HTTP/2 stream: the connection's reader goroutine receives
// every stream's DATA). When the destination is a plain TCP socket,
// Splice gives it push: while the direction waits in Read with nothing
// buffered, the Conn may write what arrives to the destination with push,
// on the goroutine that received it, instead of waking the direction for
// each piece and handing it over. The pieces of one push leave in one
// system call, in order. With wait set, push waits at most a
// millisecond for room in the socket (see pushWait); without, not at all.
// It returns how much it wrote; the Conn keeps the rest for its next
// Read, and the direction writes that (and meets any write error).
// Splice withdraws push with SetPush(nil) when the direction ends; a push
// under way then may still finish.
type Pusher interface {
	SetPush(push func(p [][]byte, wait bool) int)
}

// Side says which end of a tunnel an error came from.
type Side int

const (
	// Client is the end that asked for the tunnel.
	Client Side = iota
	// Target is the end h2proxy dialled.
	Target
)

func (s Side) String() string {
	if s == Client {
		return "client"
	}
	return "target"
}

// Error is a failure of one side of a tunnel. Conns passed to Abort use Side
// to pick the wire action: an HTTP/2 stream answers a Target failure with
// RST_STREAM(CONNECT_ERROR) (RFC 9113 §8.5) and a Client one with CANCEL.
type Error struct {
	Side Side
	Err  error
}

func (e *Error) Error() string { return e.Side.String() + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrIdle aborts a tunnel that carried no bytes in either direction for the
// idle timeout.
var ErrIdle = errors.New("tunnel idle timeout")

// NetConn adapts a net.Conn (TCP, or TLS over TCP) to Conn. buffered holds
// bytes already read from c by a bufio.Reader (after an HTTP/1.1 hijack or a
// response read); they are returned by Read before anything else.
func NetConn(c net.Conn, buffered []byte) Conn {
	return &netConn{Conn: c, pending: buffered}
}

type netConn struct {
	net.Conn
	pending []byte
}

func (c *netConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite sends TLS close_notify (when c is TLS) and then a TCP FIN, so
// that the peer sees the end both at the TLS and at the TCP layer.
func (c *netConn) CloseWrite() error {
	var err error
	if tc, ok := c.Conn.(*tls.Conn); ok {
		err = tc.CloseWrite()
	}
	if tcp := c.tcp(); tcp != nil {
		if err2 := tcp.CloseWrite(); err == nil {
			err = err2
		}
	}
	return err
}

// Abort resets the TCP connection (SO_LINGER 0 sends RST instead of FIN), so
// that the peer learns that the tunnel failed rather than ended. Over TLS
// the TCP socket is closed directly: tls.Conn.Close would first send a
// close_notify, which the peer would read as a clean end.
func (c *netConn) Abort(error) {
	if tcp := c.tcp(); tcp != nil {
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
		return
	}
	_ = c.Conn.Close()
}

// tcp returns the TCP connection under c, or nil.
func (c *netConn) tcp() socket {
	if q, ok := c.Conn.(*quietConn); ok {
		return q
	}
	if tcp := TCPConn(c.Conn); tcp != nil {
		return tcp
	}
	return nil
}

// TCPConn returns the TCP connection under c: below TLS, and below a
// wrapper that offers it with a TCPConn method (a PROXY protocol reader,
// a BatchConn). It returns nil when there is none.
func TCPConn(c net.Conn) *net.TCPConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if w, ok := c.(interface{ TCPConn() (*net.TCPConn, bool) }); ok {
		tcp, _ := w.TCPConn()
		return tcp
	}
	tcp, _ := c.(*net.TCPConn)
	return tcp
}

// plainTCP returns the TCP connection when c is plain TCP, with no TLS
// or other layer to write through.
func (c *netConn) plainTCP() socket {
	switch s := c.Conn.(type) {
	case *net.TCPConn:
		return s
	case *quietConn:
		return s
	}
	return nil
}

// quiet moves c's socket, when it is plain TCP with nothing buffered,
// out of the runtime's poller (see quietConn). It is done before the
// tunnel starts, and changes nothing if the socket cannot be moved.
func (c *netConn) quiet() {
	if tcp, ok := c.Conn.(*net.TCPConn); ok && len(c.pending) == 0 {
		if q := quiet(tcp); q != nil {
			c.Conn = q
		}
	}
}

// rawTCP returns the TCP connection when c is plain TCP with nothing
// buffered, so that copying can use the kernel's splice path.
func (c *netConn) rawTCP() socket {
	if len(c.pending) > 0 {
		return nil
	}
	return c.plainTCP()
}

// Puller is implemented by a Conn that can read what it is to send from
// the source itself, once it is ready to send it (an HTTP/2 stream: the
// connection's writer reads a stream's data straight into its batch of
// frames). When the source is a plain TCP socket, Splice calls Pull with
// read, which reads what the socket has into bufs, in order, with one
// system call and never a wait: it returns ErrWouldBlock on an empty
// socket, io.EOF at its end, or a failure as an *Error. Pull returns nil
// once read would block (Splice then waits until the socket is readable
// and calls Pull again), read's io.EOF or *Error, or the Conn's own error
// (a reset stream, say). read is called only while Pull runs, from any
// goroutine, never concurrently.
type Puller interface {
	Pull(read func(bufs [][]byte) (int, error)) error
}

// ErrWouldBlock is what a read that does not wait returns on an empty
// socket (see Puller).
var ErrWouldBlock = errWouldBlock

// socket is a plain TCP connection as the data paths use it: a
// *net.TCPConn, or a quietConn.
type socket interface {
	net.Conn
	CloseWrite() error
	SetLinger(sec int) error
	SyscallConn() (syscall.RawConn, error)
}

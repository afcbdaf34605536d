package tunnel

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawReader splits a TCP socket's Read in its two halves: a read that
// does not wait, and a wait that does not read. In between a reader can
// give back its copy buffer, or its goroutine, so that a tunnel waiting
// for data holds neither. Reads are never concurrent.
type rawReader struct {
	tcp socket
	raw syscall.RawConn
	buf *copyBuf // for readWaiting: the buffer, taken once there is data
	// noWait: a BatchConn's Read, which crypto/tls calls, reads without
	// waiting (see copyBuf.readOnce).
	noWait bool

	// The RawConn callback's mode, argument and results, in fields so
	// that a read allocates nothing.
	mode   uint8 // modeTry, modeWait, modeTryOrWait, modeTryv, modeHook
	fn     func(uintptr) bool
	p      []byte
	bufs   [][]byte // tryReadv's
	iov    iovecs
	n      int
	err    error
	waited bool
	peek   [1]byte
	failed error  // what the wait's peek found wrong with the socket
	hook   func() // readHooked's, until it is called
}

const (
	modeTry       = iota // one read attempt, never wait (tryRead)
	modeWait             // wait without reading (waitReadable)
	modeTryOrWait        // read, waiting as a net.Conn does (readWaiting)
	modeTryv             // one readv attempt, never wait (tryReadv)
	modeHook             // read as a net.Conn does, calling hook before waiting (readHooked)
)

// errWouldBlock is what a read that does not wait returns on an empty
// socket. It is a temporary net.Error, like a read deadline's, so that
// crypto/tls keeps what it had of a record and can simply be read again.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tunnel: read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// newRawReader returns a rawReader for tcp, or nil if it has no RawConn.
func newRawReader(tcp socket) *rawReader {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawReader{tcp: tcp, raw: raw}
	r.fn = r.callback
	return r
}

// callback is the one RawConn callback, doing what mode says.
func (r *rawReader) callback(fd uintptr) bool {
	switch r.mode {
	case modeTry:
		return r.try(fd)
	case modeWait:
		return r.wait(fd)
	case modeTryv:
		return r.tryv(fd)
	case modeHook:
		return r.tryHookOrWait(fd)
	}
	return r.tryOrWait(fd)
}

// tryRead reads what the socket has into p, or returns errWouldBlock.
func (r *rawReader) tryRead(p []byte) (int, error) {
	r.p, r.mode = p, modeTry
	err := r.raw.Read(r.fn)
	r.p = nil
	return r.result(err, len(p))
}

// readWaiting reads as a net.Conn Read does, into r.buf's large buffer,
// taken once the socket is readable and given back before each wait.
func (r *rawReader) readWaiting() ([]byte, int, error) {
	r.mode = modeTryOrWait
	err := r.raw.Read(r.fn)
	p := r.p
	r.p = nil
	n, err := r.result(err, len(p))
	return p, n, err
}

// result turns a read's outcome into what a net.Conn Read returns.
func (r *rawReader) result(err error, size int) (int, error) {
	switch {
	case err != nil:
		return 0, err // closed, or a deadline
	case r.err == syscall.EAGAIN:
		return 0, errWouldBlock
	case r.err != nil:
		return 0, r.opError(r.err)
	case r.n == 0 && size > 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// opError reports a failed read as net does.
func (r *rawReader) opError(errno error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: r.tcp.LocalAddr(), Addr: r.tcp.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
}

// readHooked reads into p as a net.Conn Read does, but when the socket is
// empty it first calls hook, and reads once more before it waits.
func (r *rawReader) readHooked(p []byte, hook func()) (int, error) {
	r.p, r.mode, r.hook = p, modeHook, hook
	err := r.raw.Read(r.fn)
	r.p, r.hook = nil, nil
	return r.result(err, len(p))
}

// tryHookOrWait is readHooked's RawConn callback. The hook runs within
// the read, so that nothing else reads meanwhile; data that arrives while
// it runs is read at once, and the poller waits only for an empty socket.
func (r *rawReader) tryHookOrWait(fd uintptr) bool {
	r.try(fd)
	if r.err != syscall.EAGAIN {
		return true
	}
	if hook := r.hook; hook != nil {
		r.hook = nil
		hook()
		r.try(fd)
		return r.err != syscall.EAGAIN
	}
	return false
}

// tryOrWait is readWaiting's RawConn callback: one read attempt, and on an
// empty socket the buffer goes back and the poller waits.
func (r *rawReader) tryOrWait(fd uintptr) bool {
	r.p = r.buf.takeLarge()
	r.try(fd)
	if r.err == syscall.EAGAIN {
		r.p = nil
		r.buf.putLarge()
		return false
	}
	return true
}

// try makes one read attempt and never asks the poller to wait.
func (r *rawReader) try(fd uintptr) bool {
	for {
		r.n, r.err = sysRead(fd, r.p)
		if r.err != syscall.EINTR {
			return true
		}
	}
}

// waitReadable waits until the socket has something to read (or is
// closed, or a deadline passes), without reading it.
func (r *rawReader) waitReadable() error {
	r.waited, r.mode, r.failed = false, modeWait, nil
	if err := r.raw.Read(r.fn); err != nil {
		return err
	}
	if r.failed != nil {
		// The peek took the socket's error (a reset, say): the next read
		// would find a clean end instead, so the error is the wait's.
		return r.opError(r.failed)
	}
	return nil
}

// wait is waitReadable's RawConn callback. RawConn.Read forgets any
// readiness the poller saw before it was called, so the first call peeks
// at the socket itself: data that came after tryRead's EAGAIN and before
// this wait would otherwise wait for the next data to arrive.
func (r *rawReader) wait(fd uintptr) bool {
	if r.waited {
		return true // called again: the poller saw the socket readable
	}
	r.waited = true
	for {
		_, _, err := syscall.Recvfrom(int(fd), r.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case nil:
			return true // data or EOF: no need to wait
		}
		r.failed = err
		return true
	}
}

// tryReadv reads what the socket has into bufs, in order, with one
// readv(2), or returns errWouldBlock: it never waits.
func (r *rawReader) tryReadv(bufs [][]byte) (int, error) {
	r.bufs, r.mode = bufs, modeTryv
	err := r.raw.Read(r.fn)
	r.bufs = nil
	size := 0
	for _, b := range bufs {
		size += len(b)
	}
	return r.result(err, size)
}

// tryv is tryReadv's RawConn callback.
func (r *rawReader) tryv(fd uintptr) bool {
	for {
		r.n, r.err = r.iov.sysReadv(fd, r.bufs)
		if r.err != syscall.EINTR {
			return true
		}
	}
}

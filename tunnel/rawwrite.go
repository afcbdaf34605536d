package tunnel

import (
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// pushWait is how long a push waits at most for room in the destination
// socket. The wait is what makes the source's goroutine feel the
// destination's pace, as a Splice direction does when it writes: it reads
// less often and in larger pieces, instead of waking for every few
// kilobytes and handing them on. Bounded, it cannot hold that goroutine
// (an HTTP/2 connection's reader) for long; what the socket did not take
// by then is the direction's to write.
const pushWait = time.Millisecond

// rawWriter is the state of one write to a TCP socket with raw system
// calls (see syscall.go), waiting for room through the poller as a
// net.Conn does. For a push: a first attempt that does not wait, which is
// all a socket with room needs, so that most pushes set no deadline; then,
// if the push may wait, a write of the rest that waits at most pushWait.
// For a direction's or a BatchConn's own writes: writeAll. It is lent for
// one write at a time (lendWriter), so that a tunnel waiting for data
// holds none of it.
type rawWriter struct {
	tcp  socket
	raw  syscall.RawConn
	fn   func(uintptr) bool // try, as a value, so that a write allocates nothing
	arr  net.Buffers        // the pieces being written, reused
	rest net.Buffers        // what of them is left to write
	iov  iovecs
	wait bool  // on a full socket, wait for room (else give up)
	n    int   // bytes written
	err  error // the errno a call failed with
}

var rawWriters = sync.Pool{New: func() any {
	w := new(rawWriter)
	w.fn = w.try
	return w
}}

// lendWriter lends a rawWriter for writes to tcp through raw, its
// RawConn; giveBack returns it.
func lendWriter(tcp socket, raw syscall.RawConn) *rawWriter {
	w := rawWriters.Get().(*rawWriter)
	w.tcp, w.raw = tcp, raw
	return w
}

func (w *rawWriter) giveBack() {
	w.tcp, w.raw = nil, nil
	rawWriters.Put(w)
}

// write writes the pieces of p in order, as one write, waiting for room
// if wait is set, and returns how much of them the socket took. Its errors
// are not reported: the direction meets them when it writes the rest.
func (w *rawWriter) write(p [][]byte, wait bool) int {
	w.start(p)
	if err := w.run(false); err == nil && wait && len(w.rest) > 0 && w.err == nil {
		_ = w.tcp.SetWriteDeadline(time.Now().Add(pushWait))
		w.run(true)
		_ = w.tcp.SetWriteDeadline(time.Time{})
	}
	n, _ := w.finish(nil)
	return n
}

// writeAll writes p as a net.Conn Write does: all of it, waiting for room
// as long as it takes or until the connection's write deadline.
func (w *rawWriter) writeAll(p []byte) (int, error) {
	w.arr = append(w.arr[:0], p)
	w.begin()
	return w.finish(w.run(true))
}

// writeAllTo writes p to tcp through raw, its RawConn, as writeAll does,
// with a writer lent for the write.
func writeAllTo(tcp socket, raw syscall.RawConn, p []byte) (int, error) {
	w := lendWriter(tcp, raw)
	defer w.giveBack()
	return w.writeAll(p)
}

// start begins a write of p's pieces.
func (w *rawWriter) start(p [][]byte) {
	w.arr = append(w.arr[:0], p...)
	w.begin()
}

// begin begins a write of the pieces in w.arr.
func (w *rawWriter) begin() {
	w.rest, w.n, w.err = w.arr, 0, nil
	w.consume(0)
}

// run writes w.rest until it is written, the socket is full (unless
// wait), a call fails, or the deadline passes.
func (w *rawWriter) run(wait bool) error {
	w.wait = wait
	return w.raw.Write(w.fn)
}

// finish ends a write, keeping no caller's buffer, and reports it as
// net.Conn's Write would.
func (w *rawWriter) finish(err error) (int, error) {
	clear(w.arr)
	w.rest = nil
	if err == nil && w.err != nil {
		err = &net.OpError{Op: "write", Net: "tcp", Source: w.tcp.LocalAddr(), Addr: w.tcp.RemoteAddr(), Err: os.NewSyscallError("write", w.err)}
	}
	return w.n, err
}

// try is the RawConn callback: it writes until w.rest is written, and
// on a full socket either gives up or has the poller wait for room.
func (w *rawWriter) try(fd uintptr) bool {
	for len(w.rest) > 0 {
		var n int
		var err error
		if len(w.rest) == 1 {
			n, err = sysWrite(fd, w.rest[0])
		} else {
			n, err = w.iov.sysWritev(fd, w.rest)
		}
		switch err {
		case nil:
			w.n += n
			w.consume(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return !w.wait
		default:
			w.err = err
			return true
		}
	}
	return true
}

// consume drops n written bytes from the front of w.rest, and the empty
// pieces there.
func (w *rawWriter) consume(n int) {
	for len(w.rest) > 0 && (n > 0 || len(w.rest[0]) == 0) {
		k := min(n, len(w.rest[0]))
		w.rest[0] = w.rest[0][k:]
		n -= k
		if len(w.rest[0]) == 0 {
			w.rest = w.rest[1:]
		}
	}
}

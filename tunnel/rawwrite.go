package tunnel

import (
	"net"
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

// rawWriter writes to a TCP socket with raw system calls (see
// syscall.go). For a push: a first attempt that does not wait, which is
// all a socket with room needs, so that most pushes set no deadline; then,
// if the push may wait, a write of the rest that waits at most pushWait.
// For a direction's or a BatchConn's own writes: writeAll. Its writes are
// never concurrent: pushes come from the one goroutine that receives the
// source's data, only while the direction waits, and a BatchConn writes
// under its lock.
type rawWriter struct {
	tcp  *net.TCPConn
	raw  syscall.RawConn
	fn   func(uintptr) bool // try, as a value, so that a push allocates nothing
	p    [][]byte
	arr  net.Buffers // the waiting write's pieces, reused
	rest net.Buffers // what of them is left to write
	one  [1][]byte   // writeAll's piece
	iov  iovecs
	n    int
	err  error
}

func newRawWriter(tcp *net.TCPConn) *rawWriter {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{tcp: tcp, raw: raw}
	w.fn = w.try
	return w
}

// write writes the pieces of p in order, as one write, waiting for room
// if wait is set, and returns how much of them the socket took. Its errors
// are not reported: the direction meets them when it writes the rest.
func (w *rawWriter) write(p [][]byte, wait bool) int {
	w.p = p
	err := w.raw.Write(w.fn)
	w.p = nil
	if err != nil || w.err != nil && w.err != syscall.EAGAIN {
		return 0
	}
	n := max(w.n, 0)
	size := 0
	for _, b := range p {
		size += len(b)
	}
	if n == size || !wait {
		return n
	}
	w.arr = append(w.arr[:0], p...)
	w.rest = w.arr
	for skip := n; skip > 0; {
		k := min(skip, len(w.rest[0]))
		if w.rest[0] = w.rest[0][k:]; len(w.rest[0]) == 0 {
			w.rest = w.rest[1:]
		}
		skip -= k
	}
	_ = w.tcp.SetWriteDeadline(time.Now().Add(pushWait))
	m, _ := w.rest.WriteTo(w.tcp)
	_ = w.tcp.SetWriteDeadline(time.Time{})
	clear(w.arr) // keep no caller's buffer
	return n + int(m)
}

// writeAll writes p as a net.Conn Write does, waiting for room as long
// as it takes (or until the connection's write deadline), but starts with
// a raw attempt (see syscall.go): a socket with room, the common case,
// takes all of p at once and the runtime sees no system call.
func (w *rawWriter) writeAll(p []byte) (int, error) {
	w.one[0] = p
	n := w.write(w.one[:], false)
	w.one[0] = nil
	if n == len(p) {
		return n, nil
	}
	m, err := w.tcp.Write(p[n:])
	return n + m, err
}

// try is write's RawConn callback: one attempt, never a wait.
func (w *rawWriter) try(fd uintptr) bool {
	for {
		if len(w.p) == 1 {
			w.n, w.err = sysWrite(fd, w.p[0])
		} else {
			w.n, w.err = w.iov.sysWritev(fd, w.p)
		}
		if w.err != syscall.EINTR {
			return true
		}
	}
}

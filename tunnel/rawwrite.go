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

// rawWriter writes a push: a first attempt that does not wait, which is
// all a socket with room needs, so that most pushes set no deadline; then,
// if the push may wait, a write of the rest that waits at most pushWait.
// Pushes are never
// concurrent (one goroutine receives the source's data), nor concurrent
// with the direction's own writes (push happens only while it waits).
type rawWriter struct {
	tcp *net.TCPConn
	raw syscall.RawConn
	fn  func(uintptr) bool // try, as a value, so that a push allocates nothing
	p   []byte
	n   int
	err error
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

// write writes p, waiting for room if wait is set, and returns how much
// of it the socket took. Its errors are not reported: the direction meets
// them when it writes the rest.
func (w *rawWriter) write(p []byte, wait bool) int {
	w.p = p
	err := w.raw.Write(w.fn)
	w.p = nil
	if err != nil || w.err != nil && w.err != syscall.EAGAIN {
		return 0
	}
	n := max(w.n, 0)
	if n == len(p) || !wait {
		return n
	}
	_ = w.tcp.SetWriteDeadline(time.Now().Add(pushWait))
	m, _ := w.tcp.Write(p[n:])
	_ = w.tcp.SetWriteDeadline(time.Time{})
	return n + m
}

// try is write's RawConn callback: one attempt, never a wait.
func (w *rawWriter) try(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.p)
		if w.err != syscall.EINTR {
			return true
		}
	}
}

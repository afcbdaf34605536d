package tunnel

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// quietConn is a TCP connection that the runtime's poller hears from only
// while a goroutine waits on it.
//
// The runtime registers every socket edge-triggered for both directions,
// so each segment that reaches a socket nobody waits on still wakes a
// thread parked in epoll_wait, which finds nothing to do and parks again.
// An HTTP/2 tunnel's target is such a socket: the connection's writer
// reads it in turns with other streams' targets and never waits on it,
// and each read opens the target's receive window, so its next data
// arrives at once and wakes the parked thread, on the writer's CPU. On
// 16 tunnels' download that was about 3,700 wake-ups a second.
//
// So the socket is taken out of the runtime's poller and put in epoll
// instances of its own, which are in the poller instead (epoll instances
// nest): in, where the socket's EPOLLIN is armed (one-shot) only while a
// read waits, and out, taken at the first write that has to wait for
// room, where its EPOLLOUT stays registered edge-triggered (a socket
// signals room only after a write found it full). A goroutine still waits
// through the runtime's poller, with its deadlines, and is woken by it
// directly: no thread of ours polls. The cost is a system call or two per
// wait, and an instance (a descriptor) per tunnel, two once a write
// waited; instances are reused (see idleEpolls).
type quietConn struct {
	fd    int
	in    *epoll
	laddr net.Addr
	raddr net.Addr
	raw   quietRaw

	// mu guards closing, out and wdeadline, and runs the socket options.
	mu        sync.Mutex
	closed    atomic.Bool
	out       *epoll // nil until a write waits; set under wmu and mu
	wdeadline time.Time

	// One read and one write at a time, each under its own lock, which
	// Close takes to know that none runs any more; the callbacks' state is
	// in fields so that a read or write allocates nothing.
	rmu     sync.Mutex
	readFn  func(uintptr) bool
	readCb  func(uintptr) bool
	armed   bool  // fd's EPOLLIN is armed in in, or fired and not yet taken
	armErr  error // arming failed: the read fails with it
	inAdded bool  // fd is registered in in
	events  [1]unix.EpollEvent
	wmu     sync.Mutex
	writeFn func(uintptr) bool
	writeCb func(uintptr) bool
	tryCb   func(uintptr) // runs writeFn once, before out exists
	wrote   bool          // tryCb's result
}

// quiet moves tcp's socket out of the runtime's poller into a quietConn.
// On failure it returns nil and tcp is left as it was.
func quiet(tcp *net.TCPConn) *quietConn {
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || derr != nil {
		return nil
	}
	in, err := getEpoll()
	if err != nil {
		_ = syscall.Close(fd)
		return nil
	}
	// The duplicate keeps the socket open: closing tcp only takes its
	// descriptor out of the runtime's poller.
	_ = tcp.Close()
	q := &quietConn{fd: fd, in: in, laddr: tcp.LocalAddr(), raddr: tcp.RemoteAddr()}
	q.raw.q = q
	q.readCb, q.writeCb, q.tryCb = q.readCallback, q.writeCallback, q.tryWrite
	return q
}

// epoll is an epoll instance registered in the runtime's poller, which
// sees it readable when a socket in it has an event.
type epoll struct {
	f   *os.File
	raw syscall.RawConn
	fd  int // f's, kept open as long as the epoll is
}

// idleEpolls keeps empty epoll instances for the next tunnels. Making
// one, registering it in the runtime's poller and closing it again takes
// four system calls, about 4 µs of a new tunnel here (measured over 1,000
// sockets: a quietConn made and closed cost 4-6 µs more than a socket
// closed, and 1-2 µs more with the instances reused); one taken from
// here costs a deadline reset.
var idleEpolls struct {
	sync.Mutex
	free []*epoll
}

// maxIdleEpolls bounds the descriptors kept for tunnels to come.
const maxIdleEpolls = 128

func getEpoll() (*epoll, error) {
	idleEpolls.Lock()
	if n := len(idleEpolls.free); n > 0 {
		e := idleEpolls.free[n-1]
		idleEpolls.free[n-1] = nil
		idleEpolls.free = idleEpolls.free[:n-1]
		idleEpolls.Unlock()
		_ = e.f.SetReadDeadline(time.Time{})
		return e, nil
	}
	idleEpolls.Unlock()
	return newEpoll()
}

// putEpoll takes an epoll instance back; it must be empty.
func putEpoll(e *epoll) {
	idleEpolls.Lock()
	if len(idleEpolls.free) < maxIdleEpolls {
		idleEpolls.free = append(idleEpolls.free, e)
		idleEpolls.Unlock()
		return
	}
	idleEpolls.Unlock()
	_ = e.f.Close()
}

func newEpoll() (*epoll, error) {
	efd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(efd, true); err != nil {
		_ = unix.Close(efd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(efd), "epoll") // non-blocking: the poller takes it
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &epoll{f: f, raw: raw, fd: efd}, nil
}

// rawRead is the RawConn's Read: f runs on the socket, and when it asks
// to wait, EPOLLIN is armed and the runtime's poller waits for in.
func (q *quietConn) rawRead(f func(uintptr) bool) error {
	q.rmu.Lock()
	defer q.rmu.Unlock()
	if q.closed.Load() {
		return net.ErrClosed
	}
	q.readFn = f
	err := q.in.raw.Read(q.readCb)
	q.readFn = nil
	if q.armErr != nil {
		err, q.armErr = q.opError("read", q.armErr), nil
		return err
	}
	if q.armed {
		// A deadline or Close ended the wait: disarm, or the armed
		// socket would wake the poller for nothing.
		q.take(uintptr(q.in.fd))
	}
	return q.mapErr(err)
}

func (q *quietConn) readCallback(efd uintptr) bool {
	if q.armed {
		q.take(efd)
	}
	if q.readFn(uintptr(q.fd)) {
		return true
	}
	// Arming checks the socket: data that came after f looked wakes the
	// poller at once.
	ev := &q.events[0]
	ev.Events = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT
	op := unix.EPOLL_CTL_MOD
	if !q.inAdded {
		op = unix.EPOLL_CTL_ADD
	}
	if errno := sysEpollCtl(efd, op, q.fd, ev); errno != nil {
		q.armErr = os.NewSyscallError("epoll_ctl", errno) // nothing would wake the wait
		return true
	}
	q.inAdded, q.armed = true, true
	return false
}

// take disarms the socket's EPOLLIN: collecting the event it fired does,
// and when it has not fired (a deadline ended the wait), modifying it to
// no events.
func (q *quietConn) take(efd uintptr) {
	q.armed = false
	if sysEpollWait(efd, q.events[:]) == 1 {
		return
	}
	q.events[0].Events = 0
	_ = sysEpollCtl(efd, unix.EPOLL_CTL_MOD, q.fd, &q.events[0])
}

// rawWrite is the RawConn's Write: f runs on the socket, and when it asks
// to wait, the runtime's poller waits for out.
func (q *quietConn) rawWrite(f func(uintptr) bool) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if q.closed.Load() {
		return net.ErrClosed
	}
	q.writeFn = f
	defer func() { q.writeFn = nil }()
	out := q.out // set only by takeOut, under wmu too
	if out == nil {
		// No write has waited yet: try this one without out.
		if err := q.in.raw.Control(q.tryCb); err != nil {
			return q.mapErr(err)
		}
		if q.wrote {
			return nil
		}
		var err error
		if out, err = q.takeOut(); err != nil {
			return err
		}
	}
	return q.mapErr(out.raw.Read(q.writeCb))
}

func (q *quietConn) tryWrite(uintptr) { q.wrote = q.writeFn(uintptr(q.fd)) }

// takeOut takes out, for a write that waits for room; the write tries
// again before it waits, so room made meanwhile is not missed.
func (q *quietConn) takeOut() (*epoll, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed.Load() {
		return nil, net.ErrClosed
	}
	out, err := getEpoll()
	if err != nil {
		return nil, q.opError("write", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLET}
	if errno := sysEpollCtl(uintptr(out.fd), unix.EPOLL_CTL_ADD, q.fd, &ev); errno != nil {
		putEpoll(out)
		return nil, q.opError("write", os.NewSyscallError("epoll_ctl", errno))
	}
	if !q.wdeadline.IsZero() {
		_ = out.f.SetReadDeadline(q.wdeadline)
	}
	q.out = out
	return out, nil
}

// writeCallback needs no arming: the registration in out stands, and the
// socket signals room only after a write found it full. Events that
// stay listed in out are harmless, since the runtime's poller asks the
// socket itself whether it has room when out signals.
func (q *quietConn) writeCallback(uintptr) bool {
	return q.writeFn(uintptr(q.fd))
}

// mapErr reports the epolls' errors as a net.Conn's.
func (q *quietConn) mapErr(err error) error {
	if err != nil && q.closed.Load() {
		return net.ErrClosed
	}
	return err
}

// control runs f on the socket unless it is closed.
func (q *quietConn) control(f func(fd int) error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed.Load() {
		return net.ErrClosed
	}
	return f(q.fd)
}

// Read reads as a net.Conn does. The data paths read through the
// RawConn instead (see copyBuf), so this takes no care to allocate
// nothing.
func (q *quietConn) Read(p []byte) (int, error) {
	return newRawReader(q).readHooked(p, nil)
}

func (q *quietConn) Write(p []byte) (int, error) {
	return writeAllTo(q, &q.raw, p)
}

func (q *quietConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: q.laddr, Addr: q.raddr, Err: err}
}

// Close ends any wait at once with a deadline in the past, which nothing
// can move once closed is set, then waits until no read or write runs on
// the socket, takes it out of the epoll instances, which are kept for
// other tunnels, and closes it.
func (q *quietConn) Close() error {
	q.mu.Lock()
	if q.closed.Load() {
		q.mu.Unlock()
		return net.ErrClosed
	}
	q.closed.Store(true)
	out := q.out
	_ = q.in.f.SetReadDeadline(aLongTimeAgo)
	if out != nil {
		_ = out.f.SetReadDeadline(aLongTimeAgo)
	}
	q.mu.Unlock()
	q.rmu.Lock()
	q.wmu.Lock()
	defer q.wmu.Unlock()
	defer q.rmu.Unlock()
	if q.inAdded {
		_ = sysEpollCtl(uintptr(q.in.fd), unix.EPOLL_CTL_DEL, q.fd, &q.events[0])
	}
	putEpoll(q.in)
	if out != nil {
		_ = sysEpollCtl(uintptr(out.fd), unix.EPOLL_CTL_DEL, q.fd, &q.events[0])
		putEpoll(out)
	}
	if err := syscall.Close(q.fd); err != nil {
		return q.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

func (q *quietConn) CloseWrite() error {
	return q.control(func(fd int) error { return syscall.Shutdown(fd, syscall.SHUT_WR) })
}

func (q *quietConn) SetLinger(sec int) error {
	return q.control(func(fd int) error {
		return syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: int32(sec)})
	})
}

func (q *quietConn) LocalAddr() net.Addr  { return q.laddr }
func (q *quietConn) RemoteAddr() net.Addr { return q.raddr }

func (q *quietConn) SetDeadline(t time.Time) error {
	if err := q.SetReadDeadline(t); err != nil {
		return err
	}
	return q.SetWriteDeadline(t)
}

// A read waits for in to be readable, and a write for out.
func (q *quietConn) SetReadDeadline(t time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed.Load() {
		return net.ErrClosed
	}
	return q.in.f.SetReadDeadline(t)
}

func (q *quietConn) SetWriteDeadline(t time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed.Load() {
		return net.ErrClosed
	}
	q.wdeadline = t
	if q.out == nil {
		return nil // out will take it when a write first waits
	}
	return q.out.f.SetReadDeadline(t)
}

func (q *quietConn) SyscallConn() (syscall.RawConn, error) { return &q.raw, nil }

// quietRaw is a quietConn's syscall.RawConn.
type quietRaw struct{ q *quietConn }

func (r *quietRaw) Control(f func(uintptr)) error {
	return r.q.control(func(fd int) error { f(uintptr(fd)); return nil })
}
func (r *quietRaw) Read(f func(uintptr) bool) error  { return r.q.rawRead(f) }
func (r *quietRaw) Write(f func(uintptr) bool) error { return r.q.rawWrite(f) }

// sysEpollCtl and sysEpollWait are raw calls (see syscall.go); a wait
// never blocks (timeout 0).
func sysEpollCtl(efd uintptr, op, fd int, ev *unix.EpollEvent) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, efd, uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func sysEpollWait(efd uintptr, evs []unix.EpollEvent) int {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, efd, uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

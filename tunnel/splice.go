package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options tune a Splice. The zero value is usable.
type Options struct {
	// IdleTimeout aborts the tunnel with ErrIdle when no bytes moved in
	// either direction for this long. Zero means no idle timeout.
	IdleTimeout time.Duration
}

// Stats counts the bytes a tunnel carried.
type Stats struct {
	Up   int64 // client to target
	Down int64 // target to client
}

// Copy buffers. A busy tunnel copies in large buffers from a pool; an idle
// one (most of them, most of the time) should hold none. A direction whose
// source can wait for data before it is given a buffer (plain TCP, TLS
// over a BatchConn, an HTTP/2 stream: see copyBuf.reader) takes the large
// buffer when data is there and gives it back before it waits. Any other
// waits in a small buffer of its own; when a read fills that, data is
// streaming and it takes the large one, which it gives back when two reads
// in a row come in small. (One short read is no lull: it is mostly the
// tail of a record or frame, as when TLS carries TLS and each 16406-byte
// inner record leaves 22 bytes for a second outer one.)
const (
	smallBuf = 512
	largeBuf = 32 << 10
)

var largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}

// Splice copies client<->target until both directions have ended, then
// closes both. A clean end of one direction (EOF) is passed on with
// CloseWrite and the other direction keeps flowing (half-close). A failure
// on either side, the idle timeout or ctx being done aborts both conns with
// the cause and is returned; a tunnel whose both directions ended cleanly
// returns nil. One direction is copied on the caller's goroutine, the
// other on one more.
func Splice(ctx context.Context, client, target Conn, opt Options) (Stats, error) {
	t := &splice{client: client, target: target}
	t.activity.Store(time.Now().UnixNano())
	stop := context.AfterFunc(ctx, func() { t.abort(context.Cause(ctx)) })
	defer stop()
	if opt.IdleTimeout > 0 {
		var timer *time.Timer
		timer = time.AfterFunc(opt.IdleTimeout, func() {
			if since := time.Since(time.Unix(0, t.activity.Load())); since < opt.IdleTimeout {
				timer.Reset(opt.IdleTimeout - since)
				return
			}
			t.abort(ErrIdle)
		})
		defer timer.Stop()
	}

	// Decided before the directions start: Read changes what rawTCP sees.
	kernel := rawTCP(client) != nil && rawTCP(target) != nil
	// Reads stamp the time only when an idle timeout needs it.
	var activity *atomic.Int64
	if opt.IdleTimeout > 0 {
		activity = &t.activity
	}
	var st Stats
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		var err error
		st.Up, err = pipe(target, client, Client, activity, kernel)
		t.fail(err)
	}()
	var err error
	st.Down, err = pipe(client, target, Target, activity, kernel)
	t.fail(err)
	<-upDone

	if err := t.failure(); err != nil {
		return st, err
	}
	_ = client.Close()
	_ = target.Close()
	return st, nil
}

// splice is the state the two directions of a tunnel share.
type splice struct {
	client, target Conn
	activity       atomic.Int64 // unix nanos of the last read that returned bytes

	mu     sync.Mutex
	reason error // the first failure; both conns were aborted with it
}

func (t *splice) fail(err error) {
	if err != nil {
		t.abort(err)
	}
}

// abort tears both conns down once, with the first cause.
func (t *splice) abort(err error) {
	t.mu.Lock()
	first := t.reason == nil
	if first {
		t.reason = err
	}
	t.mu.Unlock()
	if first {
		t.client.Abort(err)
		t.target.Abort(err)
	}
}

func (t *splice) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reason
}

// pipe copies src to dst and ends dst's write direction on src's EOF. from is
// the side src belongs to, so that errors name the side that failed. With
// kernel set both are plain TCP connections with nothing buffered.
func pipe(dst, src Conn, from Side, activity *atomic.Int64, kernel bool) (int64, error) {
	to := Target
	if from == Target {
		to = Client
	}
	if kernel {
		// TCP to TCP: io.Copy takes the kernel's splice(2) path. Activity is
		// not tracked per read here; a read deadline would be needed.
		n, err := io.Copy(dst.(*netConn).Conn, src.(*netConn).Conn)
		if err != nil {
			return n, classify(err, from, to)
		}
		return n, closeWrite(dst)
	}

	// A destination that frames its writes may prefer reads of a
	// multiple of some size (see WriteSizer).
	unit := 0
	if ws, ok := dst.(WriteSizer); ok {
		unit = ws.WriteSize()
	}
	// One that puts a header in front of what it writes gets room for it
	// in front of the data read into the large buffer (see HeadroomWriter).
	hw, _ := dst.(HeadroomWriter)
	room := 0
	if hw != nil {
		room = hw.Headroom()
	}
	b := &copyBuf{room: room, unit: unit}
	defer b.putLarge()
	read := b.reader(src)
	var total int64
	for {
		var buf []byte
		var n int
		var rerr error
		if read != nil {
			buf, n, rerr = read()
		} else {
			// Called here, not through a function value: the frame fewer
			// keeps an idle tunnel's goroutines within the runtime's 2 KiB
			// starting stack, which follows their average depth.
			buf = b.buf()
			n, rerr = src.Read(buf)
		}
		if n > 0 {
			if activity != nil {
				activity.Store(time.Now().UnixNano())
			}
			var w int
			var werr error
			if b.large != nil && hw != nil {
				w, werr = hw.WriteHeadroom((*b.large)[:room+n])
			} else {
				w, werr = dst.Write(buf[:n])
			}
			total += int64(w)
			if werr != nil {
				return total, &Error{Side: to, Err: werr}
			}
			b.adapt(n, len(buf))
		}
		if rerr == io.EOF {
			return total, closeWrite(dst)
		}
		if rerr != nil {
			return total, &Error{Side: from, Err: rerr}
		}
	}
}

// copyBuf is one direction's copy buffer (see smallBuf): a large one from
// the pool while data streams, and otherwise a small one of its own, or
// none at all when reading a plain TCP socket, TLS over a BatchConn or a
// LazyReader.
type copyBuf struct {
	room, unit int // headroom for the destination, read size multiple
	small      []byte
	large      *[]byte
	short      int  // reads in a row that came in small
	lazy       bool // the large buffer is taken only when data is there
}

// buf is where the next read goes.
func (b *copyBuf) buf() []byte {
	if b.large == nil {
		return b.small
	}
	buf := (*b.large)[b.room:]
	if b.unit > 0 && b.unit <= len(buf) {
		buf = buf[:len(buf)/b.unit*b.unit]
	}
	return buf
}

// takeLarge returns the large buffer to read into, taking it from the
// pool if need be.
func (b *copyBuf) takeLarge() []byte {
	if b.large == nil {
		b.large = largePool.Get().(*[]byte)
	}
	return b.buf()
}

func (b *copyBuf) putLarge() {
	if b.large != nil {
		largePool.Put(b.large)
		b.large = nil
	}
}

// adapt picks the buffer for the next read from how the last one, of n
// bytes into size, came in; after the data was written, since it may give
// that buffer back.
func (b *copyBuf) adapt(n, size int) {
	switch {
	case b.lazy:
	case b.large == nil && n == size:
		b.large = largePool.Get().(*[]byte) // data is streaming
	case b.large != nil && n < smallBuf:
		if b.short++; b.short == 2 {
			b.putLarge() // a lull: do not hold it while waiting
			b.short = 0
		}
	default:
		b.short = 0
	}
}

// reader returns the function that reads src into b without holding a
// buffer while it waits, or nil when src is to be read into b.buf() with
// its own Read. A plain TCP socket is read with the runtime's poller
// directly (tcpReader), TLS over a BatchConn with reads that do not wait
// (readTLS), and a LazyReader asks for its buffer itself. Either way an
// idle direction holds no buffer at all, and a busy one reads in large
// chunks from the first read on.
func (b *copyBuf) reader(src Conn) func() ([]byte, int, error) {
	if tcp := rawTCP(src); tcp != nil {
		if raw, err := tcp.SyscallConn(); err == nil {
			b.lazy = true
			r := &tcpReader{b: b, tcp: tcp, raw: raw}
			r.fn = r.tryRead
			return r.read
		}
	}
	if bc := batchUnder(src); bc != nil {
		b.lazy = true
		return func() ([]byte, int, error) { return b.readTLS(src, bc) }
	}
	if lr, ok := src.(LazyReader); ok {
		b.lazy = true
		idle, get := b.putLarge, b.takeLarge
		return func() ([]byte, int, error) {
			n, err := lr.ReadLazy(idle, get)
			return b.buf(), n, err
		}
	}
	b.small = make([]byte, smallBuf)
	return nil // pipe reads src into b.buf() itself
}

// batchUnder returns the BatchConn under src when src is TLS over one that
// can read without waiting.
func batchUnder(src Conn) *BatchConn {
	nc, ok := src.(*netConn)
	if !ok {
		return nil
	}
	tc, ok := nc.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	if bc, ok := tc.NetConn().(*BatchConn); ok && bc.raw != nil {
		return bc
	}
	return nil
}

// readTLS reads TLS over bc as reader's TCP reads do: into the large buffer
// when the TLS layer has a record or the socket has data, and waiting for
// the socket with no buffer held. crypto/tls keeps a partial record across
// a read that would block, as across a read deadline.
func (b *copyBuf) readTLS(src Conn, bc *BatchConn) ([]byte, int, error) {
	for {
		buf := b.takeLarge()
		bc.noWait = true
		n, err := src.Read(buf)
		bc.noWait = false
		if err != errWouldBlock {
			return buf, n, err
		}
		if n > 0 {
			return buf, n, nil // data, then a peek for close_notify came short
		}
		b.putLarge()
		if err := bc.waitReadable(); err != nil {
			return nil, 0, err
		}
	}
}

// tcpReader reads a TCP socket into a copyBuf's large buffer through the
// socket's RawConn; tryRead's results travel in its fields, so that a read
// allocates nothing.
type tcpReader struct {
	b   *copyBuf
	tcp *net.TCPConn
	raw syscall.RawConn
	fn  func(fd uintptr) bool
	buf []byte
	n   int
	err error
}

func (r *tcpReader) read() ([]byte, int, error) {
	if err := r.raw.Read(r.fn); err != nil {
		return nil, 0, err // closed, or a deadline
	}
	switch {
	case r.err != nil:
		return nil, 0, &net.OpError{Op: "read", Net: "tcp", Source: r.tcp.LocalAddr(), Addr: r.tcp.RemoteAddr(), Err: os.NewSyscallError("read", r.err)}
	case r.n == 0:
		return nil, 0, io.EOF
	}
	return r.buf, r.n, nil
}

// tryRead is the RawConn callback: it reports false (wait for the socket,
// then call again) when nothing is there to read.
func (r *tcpReader) tryRead(fd uintptr) bool {
	r.buf = r.b.takeLarge()
	for {
		r.n, r.err = syscall.Read(int(fd), r.buf)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		r.b.putLarge()
		return false
	}
	return true
}

// closeWrite passes a clean end on. Its error is not the tunnel's: a peer
// that already closed its socket has nothing left to miss, and a peer that
// failed shows it on the other direction's read.
func closeWrite(dst Conn) error {
	_ = dst.CloseWrite()
	return nil
}

// classify attributes an io.Copy error: a failed read is the source's
// fault, a failed write the destination's.
func classify(err error, from, to Side) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "write" {
		return &Error{Side: to, Err: err}
	}
	return &Error{Side: from, Err: err}
}

func rawTCP(c Conn) *net.TCPConn {
	if nc, ok := c.(*netConn); ok {
		return nc.rawTCP()
	}
	return nil
}

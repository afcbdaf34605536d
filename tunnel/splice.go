package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
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
// over a BatchConn, an HTTP/2 stream: see copyBuf.init) takes the large
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
// other on goroutines of its own (see Go).
func Splice(ctx context.Context, client, target Conn, opt Options) (Stats, error) {
	var st Stats
	var err error
	ended := make(chan struct{})
	t := start(ctx, client, target, opt, func(s Stats, e error) {
		st, err = s, e
		close(ended)
	})
	t.down.run() // waits in place: this goroutine is held until the end anyway
	<-ended
	return st, err
}

// Go is Splice without holding the caller: it returns at once, and done
// gets what Splice would have returned, on the goroutine that ends the
// tunnel. A direction that copied and then finds nothing to read waits on
// a goroutine started for that wait, whose stack is the runtime's
// smallest, not on the one that copied (which the TLS code grows to 4 KiB
// or more): an idle tunnel then costs two small stacks. The returned
// abort ends the tunnel with a cause, as ctx being done would; a ctx that
// is never done costs nothing to watch.
func Go(ctx context.Context, client, target Conn, opt Options, done func(Stats, error)) (abort func(error)) {
	t := start(ctx, client, target, opt, done)
	t.down.handOff = true
	go t.down.run()
	return t.abort
}

// start sets the tunnel up and starts the upload direction.
func start(ctx context.Context, client, target Conn, opt Options, done func(Stats, error)) *splice {
	t := &splice{client: client, target: target, done: done}
	t.activity.Store(time.Now().UnixNano())
	t.running.Store(2)
	if ctx.Done() != nil {
		t.stop = context.AfterFunc(ctx, func() { t.abort(context.Cause(ctx)) })
	}
	if opt.IdleTimeout > 0 {
		t.timer = time.AfterFunc(opt.IdleTimeout, func() {
			if since := time.Since(time.Unix(0, t.activity.Load())); since < opt.IdleTimeout {
				t.timer.Reset(opt.IdleTimeout - since)
				return
			}
			t.abort(ErrIdle)
		})
	}
	// A target that the client's side reads itself (see Puller) is never
	// waited on while it is read: keep it out of the runtime's poller
	// (see quietConn).
	if _, ok := client.(Puller); ok {
		if nc, ok := target.(*netConn); ok {
			nc.quiet()
		}
	}
	// Decided before the directions start: Read changes what rawTCP sees.
	kernel := rawTCP(client) != nil && rawTCP(target) != nil
	// Reads stamp the time only when an idle timeout needs it.
	var activity *atomic.Int64
	if opt.IdleTimeout > 0 {
		activity = &t.activity
	}
	t.up = newDirection(t, target, client, Client, activity, kernel)
	t.down = newDirection(t, client, target, Target, activity, kernel)
	t.up.handOff = true
	go t.up.run()
	return t
}

// splice is the state the two directions of a tunnel share.
type splice struct {
	client, target Conn
	activity       atomic.Int64 // unix nanos of the last read that returned bytes
	up, down       *direction
	running        atomic.Int32 // directions not ended
	stop           func() bool  // ends the ctx watch, if any
	timer          *time.Timer  // idle timeout, or nil
	done           func(Stats, error)

	mu     sync.Mutex
	reason error // the first failure; both conns were aborted with it
}

// ended is called once by each direction when it is over, with its error;
// the second call ends the tunnel.
func (t *splice) ended(err error) {
	t.fail(err)
	if t.running.Add(-1) > 0 {
		return
	}
	if t.stop != nil {
		t.stop()
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	err = t.failure()
	if err == nil {
		_ = t.client.Close()
		_ = t.target.Close()
	}
	t.done(Stats{Up: t.up.total.Load(), Down: t.down.total.Load()}, err)
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

// direction copies src to dst and ends dst's write direction on src's EOF.
// from is the side src belongs to, so that errors name the side that
// failed. With kernel set both are plain TCP connections with nothing
// buffered.
type direction struct {
	t        *splice
	dst, src Conn
	from, to Side
	activity *atomic.Int64
	kernel   bool
	// Bytes copied; atomic, since a push that was under way when the
	// direction ended may still be adding (see Pusher).
	total atomic.Int64

	// handOff: wait for data on a new goroutine and end this one (see Go),
	// if this one copied (and so may have grown its stack).
	handOff bool
	copied  bool

	b  copyBuf
	hw HeadroomWriter

	// dst as plain TCP, when it is, and its RawConn, made at the first
	// write (see writeTCP).
	tcp socket
	raw syscall.RawConn
	// src writes to tcp itself while the direction waits (see Pusher).
	pusher Pusher

	// dst reads src itself (see Puller).
	puller Puller
}

func newDirection(t *splice, dst, src Conn, from Side, activity *atomic.Int64, kernel bool) *direction {
	d := &direction{t: t, dst: dst, src: src, from: from, to: Target, activity: activity, kernel: kernel}
	if from == Target {
		d.to = Client
	}
	if !kernel {
		d.setup()
	}
	return d
}

// run copies until the direction ends, or until it hands its wait for
// data on to a new goroutine.
func (d *direction) run() {
	if d.kernel {
		d.t.ended(d.copyKernel())
		return
	}
	if d.puller != nil {
		d.runPull()
		return
	}
	for {
		var buf []byte
		var n int
		var rerr error
		if d.b.mode != readPlain {
			buf, n, rerr = d.b.read(!d.handOff || !d.copied)
		} else {
			// Called here, not through a function value: the frame fewer
			// keeps an idle tunnel's goroutines within the runtime's 2 KiB
			// starting stack, which follows their average depth.
			buf = d.b.buf()
			n, rerr = d.src.Read(buf)
		}
		if rerr == errWouldBlock {
			go d.waitThenRun()
			return
		}
		if n > 0 {
			if d.activity != nil {
				d.activity.Store(time.Now().UnixNano())
			}
			var w int
			var werr error
			if d.b.large != nil && d.hw != nil {
				w, werr = d.hw.WriteHeadroom((*d.b.large)[:int(d.b.room)+n])
			} else if d.tcp != nil {
				w, werr = d.writeTCP(buf[:n])
			} else {
				w, werr = d.dst.Write(buf[:n])
			}
			d.total.Add(int64(w))
			d.copied = true
			if werr != nil {
				d.end(&Error{Side: d.to, Err: werr})
				return
			}
			d.b.adapt(n, len(buf))
		}
		if rerr == io.EOF {
			d.end(closeWrite(d.dst))
			return
		}
		if rerr != nil {
			d.end(&Error{Side: d.from, Err: rerr})
			return
		}
	}
}

// waitThenRun waits for src on this new goroutine and then copies on.
func (d *direction) waitThenRun() {
	d.copied = false
	if err := d.b.rr.waitReadable(); err != nil {
		d.end(&Error{Side: d.from, Err: err})
		return
	}
	d.run()
}

func (d *direction) end(err error) {
	if d.pusher != nil {
		d.pusher.SetPush(nil)
	}
	d.b.putLarge()
	d.t.ended(err)
}

// setup picks the buffers and the way src is read.
func (d *direction) setup() {
	// A destination that frames its writes may prefer reads of a
	// multiple of some size (see WriteSizer).
	if ws, ok := d.dst.(WriteSizer); ok {
		d.b.unit = int32(ws.WriteSize())
	}
	// One that puts a header in front of what it writes gets room for it
	// in front of the data read into the large buffer (see HeadroomWriter).
	if hw, ok := d.dst.(HeadroomWriter); ok {
		d.hw = hw
		d.b.room = int32(hw.Headroom())
	}
	// A source that receives on a goroutine of its own may write to a
	// plain TCP destination itself (see Pusher).
	if nc, ok := d.dst.(*netConn); ok {
		d.tcp = nc.plainTCP()
	}
	if p, ok := d.src.(Pusher); ok && d.tcp != nil {
		d.pusher = p
		p.SetPush(d.push)
	}
	d.b.init(d.src)
	// One that reads what it sends itself reads a plain TCP source (see
	// Puller), and this direction only waits for it.
	if p, ok := d.dst.(Puller); ok && d.b.mode == readTCP {
		d.puller = p
	}
}

// runPull lets dst read src (see Puller): dst reads until src would
// block, and then a new goroutine waits until src is readable again and
// runs this again. A Pull may write through TLS on this goroutine (an
// HTTP/2 connection that nobody is writing to is written by the caller),
// which grows its stack; the wait, which is what an idle tunnel does,
// keeps the runtime's smallest one.
func (d *direction) runPull() {
	err := d.puller.Pull(d.pullRead)
	var te *Error
	switch {
	case err == nil:
		go d.waitThenPull()
	case err == io.EOF:
		d.end(closeWrite(d.dst))
	case errors.As(err, &te):
		d.end(err) // src's failure, from pullRead
	default:
		d.end(&Error{Side: d.to, Err: err})
	}
}

// waitThenPull waits until src is readable, on this new goroutine, and
// then lets dst read it again.
func (d *direction) waitThenPull() {
	if err := d.b.rr.waitReadable(); err != nil {
		d.end(&Error{Side: d.from, Err: err})
		return
	}
	d.runPull()
}

// pullRead is the read a Puller gets: what src has, and never a wait.
func (d *direction) pullRead(bufs [][]byte) (int, error) {
	n, err := d.b.rr.tryReadv(bufs)
	d.moved(n)
	if err != nil && err != errWouldBlock && err != io.EOF {
		err = &Error{Side: d.from, Err: err}
	}
	return n, err
}

// push writes the pieces of p to dst for src, on src's goroutine, while
// this direction waits for src (see Pusher).
func (d *direction) push(p [][]byte, wait bool) int {
	if !d.makeRaw() {
		return 0 // closed: the direction meets that when it writes
	}
	w := lendWriter(d.tcp, d.raw)
	n := w.write(p, wait)
	w.giveBack()
	d.moved(n)
	return n
}

// writeTCP writes p to dst, a plain TCP connection, through raw system
// calls (see syscall.go).
func (d *direction) writeTCP(p []byte) (int, error) {
	if !d.makeRaw() {
		return d.dst.Write(p)
	}
	return writeAllTo(d.tcp, d.raw, p)
}

// makeRaw makes raw at the first write, so that a tunnel that never
// wrote holds none. It reports false if the connection has none.
func (d *direction) makeRaw() bool {
	if d.raw == nil {
		d.raw, _ = d.tcp.SyscallConn()
	}
	return d.raw != nil
}

// moved counts n bytes that another goroutine moved for this direction
// (a push or a pull) and stamps the activity, as run does for its own.
func (d *direction) moved(n int) {
	if n > 0 {
		d.total.Add(int64(n))
		if d.activity != nil {
			d.activity.Store(time.Now().UnixNano())
		}
	}
}

// copyKernel copies TCP to TCP: io.Copy takes the kernel's splice(2) path.
// Activity is not tracked per read here; a read deadline would be needed.
func (d *direction) copyKernel() error {
	n, err := io.Copy(d.dst.(*netConn).Conn, d.src.(*netConn).Conn)
	d.total.Store(n)
	if err != nil {
		return classify(err, d.from, d.to)
	}
	return closeWrite(d.dst)
}

// copyBuf is one direction's copy buffer (see smallBuf) and the way its
// source is read: a large buffer from the pool while data streams, and
// otherwise a small one of its own, or none at all when the source can
// wait for data before it is given a buffer (see init).
type copyBuf struct {
	room, unit int32 // headroom for the destination, read size multiple
	short      int8  // reads in a row that came in small (readPlain)
	mode       srcMode
	small      []byte
	large      *[]byte
	src        Conn
	rr         *rawReader // readTCP: the socket's; readTLS: the BatchConn's
	lr         LazyReader
	// readLazy: putLarge and takeLarge, as ReadLazy takes them.
	idle   func()
	getBuf func() []byte
}

// srcMode is how a copyBuf reads its source.
type srcMode uint8

const (
	readPlain srcMode = iota // src's Read into buf(), waiting with the small buffer
	readTCP                  // a plain TCP socket, through its RawConn
	readTLS                  // TLS over a BatchConn, with reads that do not wait
	readLazy                 // a LazyReader, which asks for its buffer itself
)

// buf is where the next read goes.
func (b *copyBuf) buf() []byte {
	if b.large == nil {
		return b.small
	}
	buf := (*b.large)[b.room:]
	if unit := int(b.unit); unit > 0 && unit <= len(buf) {
		buf = buf[:len(buf)/unit*unit]
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
	case b.mode != readPlain:
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

// init picks how src is read. A plain TCP socket is read through its
// RawConn, TLS over a BatchConn with reads that do not wait, and a
// LazyReader asks for its buffer itself: either way an idle direction
// holds no buffer at all, and a busy one reads in large chunks from the
// first read on. Any other source is read with its own Read.
func (b *copyBuf) init(src Conn) {
	b.src = src
	if tcp := rawTCP(src); tcp != nil {
		if b.rr = newRawReader(tcp); b.rr != nil {
			b.mode, b.rr.buf = readTCP, b
			return
		}
	}
	if bc := batchUnder(src); bc != nil {
		b.mode, b.rr = readTLS, bc.rr
		return
	}
	if lr, ok := src.(LazyReader); ok {
		b.mode, b.lr = readLazy, lr
		b.idle, b.getBuf = b.putLarge, b.takeLarge
		return
	}
	b.small = make([]byte, smallBuf)
}

// read reads src when the mode is not readPlain. Told not to block, it
// returns errWouldBlock instead of waiting (readTCP, readTLS), and b.rr's
// waitReadable waits until it can go on.
func (b *copyBuf) read(block bool) ([]byte, int, error) {
	switch b.mode {
	case readTCP:
		if block {
			return b.rr.readWaiting()
		}
		return b.readOnce()
	case readTLS:
		for {
			buf, n, err := b.readOnce()
			if err != errWouldBlock || !block {
				return buf, n, err
			}
			if err := b.rr.waitReadable(); err != nil {
				return nil, 0, err
			}
		}
	}
	n, err := b.lr.ReadLazy(b.idle, b.getBuf)
	return b.buf(), n, err
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
	if bc, ok := tc.NetConn().(*BatchConn); ok && bc.rr != nil {
		return bc
	}
	return nil
}

// readOnce reads src into the large buffer if there is something to read:
// the TCP socket itself, or TLS, whose record layer may have a record
// already, or get one from the socket. Otherwise it gives the large buffer
// back and returns errWouldBlock. crypto/tls keeps a partial record across a
// read that would block, as across a read deadline.
func (b *copyBuf) readOnce() ([]byte, int, error) {
	buf := b.takeLarge()
	var n int
	var err error
	if b.mode == readTCP {
		n, err = b.rr.tryRead(buf)
	} else {
		b.rr.noWait = true
		n, err = b.src.Read(buf)
		b.rr.noWait = false
	}
	if err != errWouldBlock {
		return buf, n, err
	}
	if n > 0 {
		return buf, n, nil // TLS data, then a peek for close_notify came short
	}
	b.putLarge()
	return nil, 0, errWouldBlock
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

func rawTCP(c Conn) socket {
	if nc, ok := c.(*netConn); ok {
		return nc.rawTCP()
	}
	return nil
}

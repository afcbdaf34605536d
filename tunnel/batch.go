package tunnel

import (
	"net"
	"sync"
)

// BatchConn is a net.Conn whose writes can be gathered into one: between
// Hold and Flush, Write only appends to a buffer, and Flush sends it with
// one system call. It goes under a TLS connection (tls.Server(NewBatchConn
// (c), cfg)): crypto/tls writes every record of a large Write on its own,
// one system call per 16 KiB, which on a busy tunnel costs more than the
// encryption; held, the records of one Write leave in one call and, over
// TCP, in full segments.
//
// Writes that are not held (handshake, alerts, close_notify) go straight
// through. A held Write from another goroutine (tls serialises its
// records) is sent by the next Flush, in order.
//
// Splice can also read through it without waiting for the socket, so that
// a tunnel waits for TLS data holding no copy buffer (see copyBuf); and a
// reader can have it call back when the socket runs dry (OnWait).
type BatchConn struct {
	net.Conn

	mu   sync.Mutex
	held int
	buf  *[]byte // pooled; nil when nothing is held

	// Reads that do not wait (Read while rr.noWait is set), over plain
	// TCP only, for Splice's reads of TLS; nil otherwise. Its RawConn
	// also serves the writes.
	rr *rawReader
	// beforeWait runs before a Read waits for the socket (see OnWait).
	beforeWait func()
}

// maxHeld bounds what a hold gathers: beyond it Write sends what it has,
// so a huge Write never builds a huge buffer.
const maxHeld = 256 << 10

var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 160<<10)
	return &b
}}

// NewBatchConn wraps c.
func NewBatchConn(c net.Conn) *BatchConn {
	b := &BatchConn{Conn: c}
	if tcp, ok := c.(*net.TCPConn); ok {
		b.rr = newRawReader(tcp)
	}
	return b
}

// Hold makes writes gather until the matching Flush.
func (c *BatchConn) Hold() {
	c.mu.Lock()
	c.held++
	c.mu.Unlock()
}

// Flush ends a Hold and, when it was the last one, writes what was
// gathered. It returns the error of that write.
func (c *BatchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held--
	if c.held > 0 {
		return nil
	}
	return c.flushLocked()
}

func (c *BatchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == 0 {
		return c.write(p)
	}
	if c.buf == nil {
		c.buf = batchPool.Get().(*[]byte)
	}
	if len(*c.buf)+len(p) > maxHeld {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > maxHeld {
			return c.write(p)
		}
		c.buf = batchPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// flushLocked writes the gathered bytes and gives the buffer back, so an
// idle connection holds none.
func (c *BatchConn) flushLocked() error {
	if c.buf == nil {
		return nil
	}
	b := c.buf
	c.buf = nil
	_, err := c.write(*b)
	if cap(*b) <= 2*maxHeld {
		*b = (*b)[:0]
		batchPool.Put(b)
	}
	return err
}

// write writes p to the connection underneath, through raw system calls
// when it is plain TCP (see syscall.go). Called with c.mu held.
func (c *BatchConn) write(p []byte) (int, error) {
	if c.rr == nil {
		return c.Conn.Write(p)
	}
	return writeAllTo(c.rr.tcp, c.rr.raw, p)
}

// Read reads as net.Conn does, or, while rr.noWait is set, returns
// errWouldBlock instead of waiting for the socket.
func (c *BatchConn) Read(p []byte) (int, error) {
	if c.rr != nil {
		if c.rr.noWait {
			return c.rr.tryRead(p)
		}
		if c.beforeWait != nil {
			return c.rr.readHooked(p, c.beforeWait)
		}
	}
	return c.Conn.Read(p)
}

// OnWait makes every Read that finds the socket empty call f before it
// waits, and read once more after it: a reader that gathers what it
// receives learns when to hand it on, since nothing more has come. Reads
// are not concurrent, so neither are the calls. It reports false, and
// does nothing, when there is no plain TCP socket underneath to ask.
// Call it before the first Read.
func (c *BatchConn) OnWait(f func()) bool {
	if c.rr == nil {
		return false
	}
	c.beforeWait = f
	return true
}

// TCPConn returns the TCP connection underneath, as a PROXY protocol
// connection does, for half-close and reset.
func (c *BatchConn) TCPConn() (*net.TCPConn, bool) {
	tcp := TCPConn(c.Conn)
	return tcp, tcp != nil
}

// Batcher is what a connection offers when its writes can be gathered
// (see BatchConn); for a TLS connection, look at its NetConn.
type Batcher interface {
	Hold()
	Flush() error
}

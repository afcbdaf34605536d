package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// streamState is the server side of the RFC 9113 §5.1 state machine. The
// server never pushes, so the reserved states do not occur; idle streams
// are not represented (an id above conn.maxClientID is idle).
type streamState uint8

const (
	stOpen streamState = iota
	stHalfClosedRemote
	stHalfClosedLocal
	stClosed
)

// StreamError is the error a handler sees (from a request body Read, a
// ResponseWriter Write or a tunnel Read/Write) once its stream was reset:
// by the client (Remote true) or by us.
type StreamError struct {
	Code   http2.ErrCode
	Remote bool
}

func (e *StreamError) Error() string {
	if e.Remote {
		return "h2: stream reset by client: " + e.Code.String()
	}
	return "h2: stream reset: " + e.Code.String()
}

var (
	errConnClosed   = errors.New("h2: connection closed")
	errWriteTimeout = fmt.Errorf("h2: write timed out waiting for flow control: %w", context.DeadlineExceeded)
	errBodyClosed   = errors.New("h2: read on closed body")
	errStreamEnded  = errors.New("h2: write after end of stream")
)

// stream is one request stream. Every field below c is guarded by c.mu.
type stream struct {
	c      *conn
	id     uint32
	ctx    context.Context
	cancel context.CancelCauseFunc

	state     streamState
	isConnect bool
	err       error // set when reset or the connection died

	// receive side
	rbuf        recvBuf
	bodyClosed  bool  // the handler closed the body: discard DATA
	recvWindow  int64 // what the client may still send on this stream
	recvUnacked int64 // consumed, not yet returned by WINDOW_UPDATE
	wantLen     int64 // declared content-length or -1
	gotLen      int64
	trailer     http.Header // request trailers, handed over at EOF
	rwake       chan struct{}
	rdst        []byte                   // the buffer of a reader waiting in read, not yet filled
	rgot        int                      // bytes onData copied into that buffer
	rwaiting    bool                     // a reader waits in read or readLazy
	push        func([][]byte, bool) int // a tunnel's writer to its target (tunnel.Pusher)

	// send side, in wire order: header blocks (1xx, final), buffered DATA,
	// trailers, END_STREAM
	sendWindow  int64
	hdrs        []headerBlock
	sbuf        recvBuf // DATA not yet written, in pooled chunks
	trailers    []hpack.HeaderField
	endPending  bool // END_STREAM queued (after sbuf and trailers)
	endSent     bool
	queued      bool // in conn.ready or conn.connBlocked
	finalQueued bool // final response headers queued
	expect100   bool // the request asked for 100-continue
	rstAfter    bool // reset with NO_ERROR after END_STREAM if the client is still sending (RFC 9113 §8.1)
	wwake       chan struct{}
	// the writer reads DATA from the tunnel's source (see pull)
	puller  func([][]byte) (int, error)
	pullErr error
	pulls   int // pulls that read something, for pull's timeout
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *stream) remoteOpen() bool { return s.state == stOpen || s.state == stHalfClosedLocal }
func (s *stream) localOpen() bool  { return s.state == stOpen || s.state == stHalfClosedRemote }

// read is the request body / tunnel read side: it blocks until DATA,
// END_STREAM or a reset.
func (s *stream) read(p []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for s.rbuf.n == 0 {
		if err := s.readEnd(); err != nil {
			return 0, err
		}
		s.rdst = p // onData may copy DATA straight into p
		s.rwaiting = true
		c.mu.Unlock()
		<-s.rwake
		c.mu.Lock()
		s.rwaiting = false
		n := s.rgot
		s.rdst, s.rgot = nil, 0
		if n > 0 {
			if s.err != nil || s.bodyClosed {
				// Dropped like buffered input on a reset or a closed body.
				c.creditConn(int64(n))
				continue
			}
			c.creditRecv(s, int64(n))
			return n, nil
		}
	}
	n := s.rbuf.read(p)
	c.creditRecv(s, int64(n))
	return n, nil
}

// readLazy is read for a reader that has no buffer while it waits: idle
// runs before the first wait, and buf is called once data is there. DATA
// that arrives meanwhile goes to rbuf, since there is no buffer to copy
// it into directly.
func (s *stream) readLazy(idle func(), buf func() []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	waited := false
	for s.rbuf.n == 0 {
		if err := s.readEnd(); err != nil {
			return 0, err
		}
		if !waited {
			waited = true
			idle()
		}
		s.rwaiting = true
		c.mu.Unlock()
		<-s.rwake
		c.mu.Lock()
		s.rwaiting = false
	}
	n := s.rbuf.read(buf())
	c.creditRecv(s, int64(n))
	return n, nil
}

// readEnd reports why a read with nothing buffered returns at once: the
// handler closed the body, the stream was reset, or END_STREAM came.
func (s *stream) readEnd() error {
	switch {
	case s.bodyClosed:
		return errBodyClosed
	case s.err != nil:
		return s.err
	case !s.remoteOpen():
		return io.EOF
	}
	return nil
}

// recvBuf holds received DATA in pooled chunks; a stream whose data was
// consumed holds no chunk at all, so an idle tunnel costs no buffer.
type recvBuf struct {
	chunks []*chunk
	n      int // bytes held
}

const chunkSize = 16 << 10

type chunk struct {
	b    [chunkSize]byte
	r, w int
}

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

func (b *recvBuf) write(p []byte) {
	b.n += len(p)
	for len(p) > 0 {
		var last *chunk
		if k := len(b.chunks); k > 0 && b.chunks[k-1].w < chunkSize {
			last = b.chunks[k-1]
		} else {
			last = chunkPool.Get().(*chunk)
			last.r, last.w = 0, 0
			b.chunks = append(b.chunks, last)
		}
		n := copy(last.b[last.w:], p)
		last.w += n
		p = p[n:]
	}
}

func (b *recvBuf) read(p []byte) int {
	total := 0
	for len(p) > 0 && len(b.chunks) > 0 {
		ch := b.chunks[0]
		n := copy(p, ch.b[ch.r:ch.w])
		ch.r += n
		p = p[n:]
		total += n
		if ch.r == ch.w {
			chunkPool.Put(ch)
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
		}
	}
	if len(b.chunks) == 0 {
		b.chunks = nil
	}
	b.n -= total
	return total
}

// appendTo moves n buffered bytes to the end of dst (the writer's batch).
func (b *recvBuf) appendTo(dst []byte, n int) []byte {
	b.n -= n
	for n > 0 {
		ch := b.chunks[0]
		k := min(n, ch.w-ch.r)
		dst = append(dst, ch.b[ch.r:ch.r+k]...)
		ch.r += k
		n -= k
		if ch.r == ch.w {
			chunkPool.Put(ch)
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
		}
	}
	if len(b.chunks) == 0 {
		b.chunks = nil
	}
	return dst
}

// reset drops everything and returns how many bytes were dropped.
func (b *recvBuf) reset() int {
	for _, ch := range b.chunks {
		chunkPool.Put(ch)
	}
	n := b.n
	b.chunks, b.n = nil, 0
	return n
}

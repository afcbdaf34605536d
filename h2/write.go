package h2

import (
	"bytes"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ctrlFrame is a connection-management frame waiting to be written. These
// go before stream frames: they are small and keep the peer's view of the
// connection current.
type ctrlFrame struct {
	typ      http2.FrameType
	streamID uint32
	code     http2.ErrCode
	incr     uint32
	ack      bool
	ping     [8]byte
	lastID   uint32
	settings []http2.Setting
}

// batchBuf collects a batch of frames for one write to the socket.
type batchBuf struct{ b []byte }

func (w *batchBuf) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

const (
	batchTarget    = 64 << 10
	maxDataFrame   = 64 << 10 // even when the client allows larger frames
	tlsRecord      = 16 << 10 // TLS plaintext record size (RFC 8446 §5.1)
	frameHeaderLen = 9        // RFC 9113 §4.1
)

// batchPool lends the writer its buffer for one batch only, so that an
// idle connection holds no write buffer.
var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchTarget+maxDataFrame)
	return &b
}}

// writeLoop is the writer goroutine: it drains control frames first, then
// one frame per ready stream in round-robin order, so that a busy tunnel
// cannot starve the others, and writes each batch with one socket write.
// A handler goroutine may write a batch itself while the writer is idle
// (writeDirect); c.writing makes sure only one goroutine writes at a time.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for c.writeErr == nil && (c.writing || !c.hasWork() && !c.writerStop) {
			c.mu.Unlock()
			<-c.wwake
			c.mu.Lock()
		}
		if c.writeErr != nil || !c.hasWork() {
			return
		}
		c.writing = true
		err := c.writeBatches(0)
		c.doneWriting()
		if err != nil {
			// Unblock the reader; teardown wakes the streams.
			_ = c.nc.Close()
			return
		}
	}
}

func (c *conn) hasWork() bool { return len(c.ctrl) > 0 || len(c.ready) > 0 }

// writeBatches writes batches while there is work, at most max of them
// (0: no limit). Called with c.mu held and c.writing set; c.mu is released
// during each socket write.
func (c *conn) writeBatches(max int) error {
	for n := 0; c.hasWork() && (max == 0 || n < max); n++ {
		stopping := c.writerStop
		bp := batchPool.Get().(*[]byte)
		c.bb.b = (*bp)[:0]
		c.fillBatch()
		buf := c.bb.b
		c.bb.b = nil
		c.mu.Unlock()
		err := c.writeConn(buf, stopping)
		if cap(buf) <= 4*batchTarget {
			*bp = buf[:0]
			batchPool.Put(bp)
		}
		c.mu.Lock()
		if err != nil {
			c.writeErr = err
			return err
		}
	}
	return nil
}

// writeDirect lets a goroutine that just queued output write it itself
// when no one else is writing, at most max batches (0: until nothing is
// left): a tunnel's Write then costs no switch to the writer goroutine
// and back. What is left is the writer's. Called with c.mu held, never
// from the reader goroutine (which must not block on the socket).
func (c *conn) writeDirect(max int) {
	if c.writing || !c.hasWork() {
		return // the goroutine writing takes the work on (see enqueue)
	}
	if c.writerStop || c.writeErr != nil {
		signal(c.wwake) // the writer's to finish
		return
	}
	c.writing = true
	c.directDone(c.writeBatches(max))
}

// doneWriting ends a goroutine's turn at writing to the connection and
// wakes the tunnels waiting for one (see stream.write).
func (c *conn) doneWriting() {
	c.writing = false
	c.turn.Broadcast()
}

// throughable reports whether writeThrough could write for s once no
// goroutine is writing: nothing else waits to be written (no other stream
// is ready, s has nothing queued) and both windows are open.
func (c *conn) throughable(s *stream) bool {
	return !c.writerStop && c.writeErr == nil && len(c.ready) == 0 &&
		!s.queued && len(s.hdrs) == 0 && s.sbuf.n == 0 && s.sendWindow > 0 && c.sendWindow > 0
}

// writeThrough writes p as DATA frames of s straight from the caller's
// buffer when no goroutine is writing and throughable holds. It saves
// the copy into the send buffer and the send buffer's pooled chunks; the
// batch is written on this (a handler's) goroutine, as writeDirect does.
// It returns how much of p went out; the rest takes the buffered path.
// Called with c.mu held.
func (c *conn) writeThrough(s *stream, p []byte) (int, error) {
	if c.writing || !c.throughable(s) {
		return 0, nil
	}
	c.writing = true
	bp := batchPool.Get().(*[]byte)
	c.bb.b = (*bp)[:0]
	c.fillBatch() // control frames first, as always
	total := 0
	for len(p) > 0 && len(c.bb.b) < batchTarget && s.sendWindow > 0 && c.sendWindow > 0 {
		n := min(len(p), int(s.sendWindow), int(c.sendWindow), c.dataFrameMax())
		c.dataHeader(s, n, false)
		c.bb.b = append(c.bb.b, p[:n]...)
		s.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		p = p[n:]
		total += n
	}
	buf := c.bb.b
	c.bb.b = nil
	stopping := c.writerStop
	c.mu.Unlock()
	err := c.writeConn(buf, stopping)
	if cap(buf) <= 4*batchTarget {
		*bp = buf[:0]
		batchPool.Put(bp)
	}
	c.mu.Lock()
	c.directDone(err)
	return total, err
}

// writeFramed writes b[frameHeaderLen:] as DATA of s. When the connection
// is idle (as for writeThrough) and nothing else is queued, the frames go
// out from where the data lies, as many as both windows allow: no copy at
// all (against writeThrough's copy into a batch, one tunnel's and 16
// tunnels' downloads measured 3-4 % less proxy CPU per byte, and memmove
// fell from 11 % to 7 % of the 16 tunnels' profile). What the windows do
// not allow takes the path of write. Several frames need a batching
// connection (TLS over a BatchConn, see writeInPlace); without one, data
// beyond one frame takes the path of write too.
func (s *stream) writeFramed(b []byte) (int, error) {
	p := b[frameHeaderLen:]
	c := s.c
	c.mu.Lock()
	if s.sendCheck() != nil || c.writing || !c.throughable(s) || len(c.ctrl) > 0 ||
		len(p) == 0 || (len(p) > c.dataFrameMax() && c.batch == nil) {
		c.mu.Unlock()
		return s.write(p)
	}
	var sizes [maxInPlaceFrames]int
	nf, planned := 0, 0
	for planned < len(p) && nf < len(sizes) && s.sendWindow > 0 && c.sendWindow > 0 {
		n := min(len(p)-planned, int(s.sendWindow), int(c.sendWindow), c.dataFrameMax())
		c.chargeData(n)
		s.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		sizes[nf] = n
		nf++
		planned += n
	}
	c.writing = true
	stopping := c.writerStop
	c.mu.Unlock()
	err := c.writeInPlace(b[:frameHeaderLen+planned], sizes[:nf], s.id, stopping)
	c.mu.Lock()
	c.directDone(err)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if planned < len(p) {
		n, err := s.write(p[planned:])
		return planned + n, err
	}
	return planned, nil
}

// maxInPlaceFrames bounds the frames of one writeFramed; a tunnel's copy
// buffer holds two.
const maxInPlaceFrames = 8

// writeInPlace writes DATA frames of stream id whose payloads follow one
// another in b[frameHeaderLen:], of the given sizes. Each frame's header
// goes into the 9 bytes in front of its payload just before the frame is
// handed to TLS: for the first, b's headroom; for each later one, the
// tail of the frame before it, which TLS has copied (and encrypted) by
// then. The frames leave as one batch. Called without c.mu, holding the
// turn to write (c.writing).
func (c *conn) writeInPlace(b []byte, sizes []int, id uint32, stopping bool) error {
	held := c.beginWrite(len(b), stopping)
	var err error
	off := 0
	for _, n := range sizes {
		appendDataHeader(b[off:off], n, 0, id)
		if _, err = c.nc.Write(b[off : off+frameHeaderLen+n]); err != nil {
			break
		}
		off += n
	}
	return c.endWrite(held, err)
}

// directDone ends a write made on a handler's goroutine. Called with c.mu
// held and c.writing set.
func (c *conn) directDone(err error) {
	if err != nil {
		c.writeErr = err
		_ = c.nc.Close()
	}
	c.doneWriting()
	if c.hasWork() || c.writerStop || err != nil {
		signal(c.wwake) // the writer may have skipped a wake-up while we wrote
	}
}

func (c *conn) writeConn(buf []byte, stopping bool) error {
	if len(buf) == 0 {
		return nil
	}
	held := c.beginWrite(len(buf), stopping)
	_, err := c.nc.Write(buf)
	return c.endWrite(held, err)
}

// beginWrite prepares writing n bytes to the connection: it bounds the
// write by WriteTimeout and, for more than one TLS record, holds the
// batch so that they leave with one system call. It reports whether it
// held the batch, for endWrite.
func (c *conn) beginWrite(n int, stopping bool) (held bool) {
	if c.cfg.WriteTimeout > 0 && !stopping {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	}
	if c.batch == nil || n <= tlsRecord {
		return false
	}
	c.batch.Hold()
	return true
}

// endWrite sends a held batch and returns the write's first error.
func (c *conn) endWrite(held bool, err error) error {
	if held {
		if ferr := c.batch.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// fillBatch encodes frames into c.bb until the batch is big enough or
// nothing is writable. Called with c.mu held.
func (c *conn) fillBatch() {
	for len(c.bb.b) < batchTarget {
		if len(c.ctrl) > 0 {
			for i := range c.ctrl {
				c.writeCtrl(&c.ctrl[i])
				c.ctrl[i] = ctrlFrame{}
			}
			if c.ctrl = c.ctrl[:0]; cap(c.ctrl) > 1024 {
				c.ctrl = nil // after a burst, do not keep its backlog's memory
			}
			continue
		}
		if len(c.ready) == 0 {
			return
		}
		s := c.ready[0]
		c.ready[0] = nil
		c.ready = c.ready[1:]
		s.queued = false
		if !s.sendable() {
			continue
		}
		if s.nextIsData() && c.sendWindow <= 0 {
			// Parked until the client opens the connection window.
			s.queued = true
			c.connBlocked = append(c.connBlocked, s)
			if s.puller != nil {
				signal(s.wwake) // the tunnel bounds the wait (see pull)
			}
			continue
		}
		if s.pulling() {
			c.pullData(s)
			c.enqueue(s)
			if len(c.bb.b) >= pullFrames*tlsRecord {
				return // see pullFrames
			}
			continue
		}
		c.writeStreamFrame(s)
		c.enqueue(s) // this turn's holder goes on or hands over
	}
}

func (c *conn) writeCtrl(f *ctrlFrame) {
	switch f.typ {
	case http2.FrameSettings:
		if f.ack {
			_ = c.wfr.WriteSettingsAck()
		} else {
			_ = c.wfr.WriteSettings(f.settings...)
		}
	case http2.FramePing:
		_ = c.wfr.WritePing(f.ack, f.ping)
	case http2.FrameWindowUpdate:
		_ = c.wfr.WriteWindowUpdate(f.streamID, f.incr)
	case http2.FrameRSTStream:
		_ = c.wfr.WriteRSTStream(f.streamID, f.code)
	case http2.FrameGoAway:
		_ = c.wfr.WriteGoAway(f.lastID, f.code, nil)
	}
}

// dataFrameMax is the DATA payload per frame: as large as the client
// allows (up to maxDataFrame), less the 9-byte frame header, so that a
// frame fills whole 16 KiB TLS records and a batch of frames needs no
// short record at its end.
func (c *conn) dataFrameMax() int {
	m := min(c.peerMaxFrame+9, maxDataFrame)
	return m/tlsRecord*tlsRecord - frameHeaderLen
}

// writeDataFrame appends a DATA frame (§6.1) with n bytes from s's send
// buffer: one copy of the payload, no padding.
func (c *conn) writeDataFrame(s *stream, n int, end bool) {
	c.dataHeader(s, n, end)
	c.bb.b = s.sbuf.appendTo(c.bb.b, n)
}

// dataHeader appends the header of a DATA frame with n bytes of payload
// and accounts for the WINDOW_UPDATEs it entitles the client to.
func (c *conn) dataHeader(s *stream, n int, end bool) {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	c.bb.b = appendDataHeader(c.bb.b, n, flags, s.id)
	c.chargeData(n)
}

// appendDataHeader appends a DATA frame header (§4.1, §6.1).
func appendDataHeader(b []byte, n int, flags byte, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), flags,
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// chargeData accounts for the WINDOW_UPDATEs n bytes of DATA entitle the
// client to.
func (c *conn) chargeData(n int) {
	if c.wuBudget < wuBudgetMax {
		// A client may return window every 4 KiB it consumes (x/net's
		// client does), on the stream and on the connection.
		c.wuBudget += 2 + 2*int64(n/4096)
	}
}

// writeHeaderBlock HPACK-encodes fields and writes them as HEADERS plus
// CONTINUATION frames no larger than the client's SETTINGS_MAX_FRAME_SIZE
// (§4.3, §6.10). Encoding happens here, in write order, because the HPACK
// dynamic table depends on it.
func (c *conn) writeHeaderBlock(id uint32, fields []hpack.HeaderField, end bool) {
	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.henc.WriteField(f)
	}
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), c.peerMaxFrame)]
		block = block[len(frag):]
		if first {
			_ = c.wfr.WriteHeaders(http2.HeadersFrameParam{
				StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0,
			})
			first = false
		} else {
			_ = c.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
	if c.hbuf.Cap() > 64<<10 {
		c.hbuf = bytes.Buffer{} // a huge header block once is no reason to keep its buffer
	}
}

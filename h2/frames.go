package h2

import (
	"errors"

	"golang.org/x/net/http2"
)

// closedID remembers a closed stream, so that a late frame on it can be
// told from a frame on a stream that never existed (RFC 9113 §5.1).
type closedID struct {
	id      uint32
	weReset bool // we sent RST_STREAM: late frames are ignored, not errors
}

// processFrame handles one frame from the reader goroutine.
func (c *conn) processFrame(f http2.Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.heldFor; h != nil && f.Header().StreamID == h.id && f.Header().Type != http2.FrameData {
		c.releaseHeld(nil) // before the frame can end or reset the stream
	}
	var err error
	switch f := f.(type) {
	case *http2.SettingsFrame:
		err = c.onSettings(f)
	case *http2.MetaHeadersFrame:
		c.emptyFrames = 0
		err = c.onHeaders(f)
	case *http2.DataFrame:
		err = c.onData(f)
	case *http2.WindowUpdateFrame:
		err = c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		err = c.onRSTStream(f)
	case *http2.PingFrame:
		err = c.onPing(f)
	case *http2.GoAwayFrame:
		c.peerGoAway = true
		c.maybeCloseLocked()
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			// §5.3.1: a stream cannot depend on itself.
			err = c.streamErrorLocked(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.PushPromiseFrame:
		err = protoErr("PUSH_PROMISE from a client") // §8.4
	}
	// Any other frame type is an extension and is ignored (§5.5).
	if err == nil && len(c.ctrl) > c.cfg.MaxQueuedControlFrames {
		err = &connError{http2.ErrCodeEnhanceYourCalm, "control frame flood"}
	}
	return err
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return &connError{http2.ErrCode(ce), "invalid setting " + st.String()}
			}
			return protoErr("invalid setting %s", st)
		}
		switch st.ID {
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(st.Val)
		case http2.SettingInitialWindowSize:
			return c.setPeerInitialWindow(int64(st.Val))
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(st.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// §6.5.3: acknowledge once the values are applied.
	c.queueCtrl(ctrlFrame{typ: http2.FrameSettings, ack: true})
	return nil
}

// setPeerInitialWindow applies a new SETTINGS_INITIAL_WINDOW_SIZE to every
// open stream by the difference (§6.9.2); a window may go negative.
func (c *conn) setPeerInitialWindow(v int64) error {
	delta := v - c.peerInitWindow
	c.peerInitWindow = v
	for _, s := range c.streams {
		s.sendWindow += delta
		if s.sendWindow > maxWindow {
			return &connError{http2.ErrCodeFlowControl, "stream window overflow from SETTINGS"}
		}
		if s.puller != nil && s.sendWindow <= 0 {
			signal(s.wwake) // the tunnel bounds the wait (see pull)
		}
		c.schedule(s)
	}
	return nil
}

func (c *conn) onPing(f *http2.PingFrame) error {
	if f.IsAck() {
		if f.Data == drainPing {
			c.finishDrainLocked()
		}
		return nil
	}
	c.queueCtrl(ctrlFrame{typ: http2.FramePing, ack: true, ping: f.Data})
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.wuBudget--
	if c.wuBudget < 0 {
		return &connError{http2.ErrCodeEnhanceYourCalm, "WINDOW_UPDATE flood"}
	}
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return &connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		if len(c.connBlocked) > 0 {
			c.ready = append(c.ready, c.connBlocked...) // still marked queued
			c.connBlocked = c.connBlocked[:0]
			signal(c.wwake)
		}
		// Otherwise the writer has nothing new to do: a client returning
		// window every few kilobytes (x/net's does) must not wake it each
		// time.
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxClientID {
			return protoErr("WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		return nil // closed stream: ignore (§6.9)
	}
	s.sendWindow += inc
	if s.sendWindow > maxWindow {
		return c.streamErrorLocked(s.id, http2.ErrCodeFlowControl)
	}
	c.schedule(s)
	return nil
}

func (c *conn) onRSTStream(f *http2.RSTStreamFrame) error {
	if f.StreamID > c.maxClientID {
		return protoErr("RST_STREAM on idle stream %d", f.StreamID)
	}
	s := c.streams[f.StreamID]
	if s == nil {
		return nil
	}
	if f.ErrCode == http2.ErrCodeNo && s.endPending {
		// Our side is complete and the client says it needs nothing more
		// (as we do in §8.1): a clean end of its direction, not a failure.
		c.closeStream(s, nil)
		return nil
	}
	c.closeStream(s, &StreamError{Code: f.ErrCode, Remote: true})
	return c.chargeReset()
}

// onData delivers request DATA (§6.1) under connection and stream flow
// control (§6.9). Padding and dropped data are credited back at once.
func (c *conn) onData(f *http2.DataFrame) error {
	length := int64(f.Length)
	if length > c.recvWindow {
		return &connError{http2.ErrCodeFlowControl, "connection window exceeded"}
	}
	c.recvWindow -= length
	data := f.Data()
	if len(data) == 0 && !f.StreamEnded() {
		c.emptyFrames++
		if c.emptyFrames > maxEmptyFrames {
			return &connError{http2.ErrCodeEnhanceYourCalm, "empty DATA flood"}
		}
	} else {
		c.emptyFrames = 0
	}
	s := c.streams[f.StreamID]
	if c.heldFor != nil && c.heldFor != s {
		c.releaseHeld(nil)
	}
	if s == nil || !s.remoteOpen() {
		c.creditConn(length)
		return c.dataOnClosed(s, f.StreamID)
	}
	if length > s.recvWindow {
		c.creditConn(length)
		return c.streamErrorLocked(s.id, http2.ErrCodeFlowControl)
	}
	s.recvWindow -= length
	if pad := length - int64(len(data)); pad > 0 {
		c.creditConn(pad)
		s.recvUnacked += pad
	}
	s.gotLen += int64(len(data))
	if s.wantLen >= 0 && (s.gotLen > s.wantLen || f.StreamEnded() && s.gotLen != s.wantLen) {
		// §8.1.1: content-length must equal the DATA payload total.
		c.creditConn(int64(len(data)))
		return c.streamErrorLocked(s.id, http2.ErrCodeProtocol)
	}
	end := f.StreamEnded()
	if c.hold(s, data, end) {
		return nil
	}
	if c.heldFor == s {
		c.releaseHeld(data)
	} else {
		c.deliver(s, nil, data)
	}
	if end && s.state != stClosed {
		c.remoteEnd(s)
	}
	return nil
}

// holdMax is the most DATA the reader holds back (see hold). The tail of
// a tunnelled TLS record is 31 to 38 bytes: a 16 KiB record with its
// overhead does not fit the 16 KiB - 9 DATA payload that Chrome sends.
const holdMax = 1 << 10

// hold keeps a small piece of DATA for a tunnel back, to leave with the
// stream's next DATA in one write to the target. Tunnelled TLS records
// are a little larger than the DATA frames a client sends (Chrome's are
// 16 KiB - 9), so every record arrives as a full frame and a tail of
// some 31 bytes: pushed on their own, the tails cost half of an upload's
// write system calls. What is held leaves at the latest when the reader
// finds nothing more to read from the client (conn.flushHeld, called
// before the socket read waits), or when a frame for another stream, or
// another frame for this one, comes first; its flow-control credit is
// returned when it leaves.
func (c *conn) hold(s *stream, data []byte, end bool) bool {
	// onData released anything held for another stream.
	if !c.canHold || end || len(data) == 0 || len(c.held)+len(data) > holdMax || !c.pushable(s) {
		return false
	}
	c.held = append(c.held, data...)
	c.heldFor = s
	return true
}

// flushHeld is what the reader does before it waits for the client
// (tunnel.BatchConn.OnWait): nothing more has come, so what it holds
// leaves now. Only the reader holds, so only it looks at heldFor.
func (c *conn) flushHeld() {
	if c.heldFor == nil {
		return
	}
	c.mu.Lock()
	c.releaseHeld(nil)
	c.mu.Unlock()
}

// releaseHeld delivers what hold kept back and then more, DATA of the
// same stream that came after it.
func (c *conn) releaseHeld(more []byte) {
	if s := c.heldFor; s != nil {
		c.heldFor = nil
		c.deliver(s, c.held, more)
		c.held = c.held[:0]
	}
}

// deliver hands received DATA for s, held and then data, to its reader:
// pushed to a tunnel's target, copied into the buffer of a reader that
// waits, or buffered; or, when nobody will read it, dropped with its
// window credited back.
func (c *conn) deliver(s *stream, held, data []byte) {
	if len(held)+len(data) == 0 {
		return
	}
	if s.state == stClosed {
		// Reset since it was held: dropped, as buffered input is.
		c.creditConn(int64(len(held) + len(data)))
		return
	}
	if c.pushable(s) {
		n := c.pushData(s, held, data)
		k := min(n, len(held))
		held, data = held[k:], data[n-k:]
	}
	for _, p := range [2][]byte{held, data} {
		switch {
		case len(p) == 0:
		case s.state == stClosed || s.bodyClosed:
			c.creditConn(int64(len(p))) // reset meanwhile, or body closed: dropped
		case s.rbuf.n == 0 && len(s.rdst) >= len(p):
			// A reader waits with room: copy straight into its buffer,
			// one copy (and no pooled chunk) less than through rbuf.
			n := copy(s.rdst, p)
			s.rdst = s.rdst[n:]
			s.rgot += n
			signal(s.rwake)
		default:
			s.rbuf.write(p)
			signal(s.rwake)
		}
	}
}

// pushable reports whether DATA for s may go to its target on this, the
// reader's, goroutine (tunnel.Pusher): the tunnel's own goroutine waits
// with nothing buffered, so nothing can overtake what is already on its
// way.
func (c *conn) pushable(s *stream) bool {
	return s.push != nil && s.rwaiting && s.rbuf.n == 0 && s.rgot == 0
}

// pushData pushes held and data, in one write, to s's target. A tunnel's
// upload then costs no wake-up of the tunnel's goroutine and no copy into
// rbuf. When s is the connection's only open stream, the push may wait a
// moment for room in the target's socket, so that this goroutine reads
// from the client at the target's pace, in larger pieces, as a direction
// of an HTTP/1.1 tunnel does (one tunnel's upload measured about 8 % less
// proxy CPU per byte and 4 % more throughput); with other streams open it
// never waits, since their frames would wait with it, and still saves 16
// tunnels' upload about 8 % of its CPU per byte (paired runs), the
// hand-offs of their data to goroutines on the other core. It returns how
// much the target took, which counts as consumed for flow control; the
// caller keeps the rest. c.mu is released during the write: a local reset
// may close s meanwhile, but no DATA for s can come, since only this
// goroutine delivers it.
func (c *conn) pushData(s *stream, held, data []byte) int {
	push := s.push
	lone := c.active == 1
	p := c.pieces[:0]
	for _, b := range [2][]byte{held, data} {
		if len(b) > 0 {
			p = append(p, b)
		}
	}
	c.mu.Unlock()
	n := push(p, lone)
	c.mu.Lock()
	clear(c.pieces[:])
	if s.state != stClosed {
		c.creditRecv(s, int64(n))
	} else {
		c.creditConn(int64(n))
	}
	return n
}

// dataOnClosed answers DATA on a stream that is not open for receiving.
func (c *conn) dataOnClosed(s *stream, id uint32) error {
	if id > c.maxClientID {
		return protoErr("DATA on idle stream %d", id)
	}
	if s == nil && (c.recentlyReset(id) || c.goawaySent && id > c.lastID) {
		return nil // §5.1, §6.8: we reset or ignored it; frames in flight are ignored
	}
	return c.streamErrorLocked(id, http2.ErrCodeStreamClosed)
}

// recentlyClosed reports whether id is a remembered closed stream and
// whether we were the side that reset it.
func (c *conn) recentlyClosed(id uint32) (found, weReset bool) {
	for _, r := range c.recent {
		if r.id == id {
			return true, r.weReset
		}
	}
	return false, false
}

func (c *conn) recentlyReset(id uint32) bool {
	_, weReset := c.recentlyClosed(id)
	return weReset
}

// remoteEnd handles END_STREAM from the client.
func (c *conn) remoteEnd(s *stream) {
	switch s.state {
	case stOpen:
		s.state = stHalfClosedRemote
	case stHalfClosedLocal:
		c.closeStream(s, nil)
	}
	signal(s.rwake)
}

// localEnd runs when the writer wrote our END_STREAM.
func (c *conn) localEnd(s *stream) {
	switch s.state {
	case stOpen:
		s.state = stHalfClosedLocal
		if s.rstAfter {
			// §8.1: the response is complete; the rest of the request
			// is not wanted.
			c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, streamID: s.id, code: http2.ErrCodeNo})
			c.closeStream(s, nil)
			c.markReset(s.id)
		}
	case stHalfClosedRemote:
		c.closeStream(s, nil)
	}
}

// resetStream sends RST_STREAM(code) and closes s.
func (c *conn) resetStream(s *stream, code http2.ErrCode) {
	if s.state == stClosed {
		return
	}
	c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, streamID: s.id, code: code})
	c.closeStream(s, &StreamError{Code: code})
	c.markReset(s.id)
}

func (c *conn) rememberClosed(id uint32, weReset bool) {
	c.recent[c.recentPos] = closedID{id: id, weReset: weReset}
	c.recentPos = (c.recentPos + 1) % recentClosed
}

func (c *conn) markReset(id uint32) {
	for i := range c.recent {
		if c.recent[i].id == id {
			c.recent[i].weReset = true
		}
	}
}

// closeStream moves s to closed. With err (a reset or the connection's
// end) pending output and buffered input are dropped and waiters woken
// with err; on a clean close unread input stays readable.
func (c *conn) closeStream(s *stream, err error) {
	if s.state == stClosed {
		return
	}
	s.state = stClosed
	delete(c.streams, s.id)
	c.active--
	c.rememberClosed(s.id, false)
	// Nothing more can be sent; waiters must not wait for it.
	s.hdrs, s.trailers = nil, nil
	s.puller = nil
	s.sbuf.reset()
	if err != nil {
		s.err = err
		c.creditConn(int64(s.rbuf.reset()))
		s.cancel(err)
	}
	signal(s.rwake)
	signal(s.wwake)
	c.turn.Broadcast() // a write waiting for its turn must see the end
	if c.active == 0 {
		c.idleTimerLocked()
		c.maybeCloseLocked()
	}
}

// creditRecv returns n consumed bytes to the client's windows, in
// WINDOW_UPDATEs of at least a quarter window so that a fast stream costs
// few frames (§6.9.1).
func (c *conn) creditRecv(s *stream, n int64) {
	c.creditConn(n)
	if !s.remoteOpen() {
		return
	}
	s.recvUnacked += n
	if s.recvUnacked >= int64(c.cfg.StreamWindow)/4 {
		c.queueCtrl(ctrlFrame{typ: http2.FrameWindowUpdate, streamID: s.id, incr: uint32(s.recvUnacked)})
		s.recvWindow += s.recvUnacked
		s.recvUnacked = 0
	}
}

func (c *conn) creditConn(n int64) {
	if n <= 0 {
		return
	}
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.ConnWindow)/4 {
		c.queueCtrl(ctrlFrame{typ: http2.FrameWindowUpdate, incr: uint32(c.recvUnacked)})
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
}

func (c *conn) queueCtrl(f ctrlFrame) {
	if c.closed && c.writerStop {
		return
	}
	c.ctrl = append(c.ctrl, f)
	signal(c.wwake)
}

// schedule puts s on the writer's round-robin queue when it has something
// writable, and wakes the writer.
func (c *conn) schedule(s *stream) {
	if c.enqueue(s) {
		signal(c.wwake)
	}
}

// enqueue is schedule without waking the writer, for a goroutine that
// holds the turn to write (fillBatch) or is about to take it (writeDirect):
// it writes the work itself or leaves it to the writer when its turn ends
// (directDone, writeLoop). A needless wake costs the writer goroutine a
// trip through the scheduler, often a thread wake-up: in the new-tunnel
// benchmark, the 200 and END_STREAM each woke it for nothing.
func (c *conn) enqueue(s *stream) bool {
	if s.queued || !s.sendable() {
		return false
	}
	s.queued = true
	c.ready = append(c.ready, s)
	return true
}

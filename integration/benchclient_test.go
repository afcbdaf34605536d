package integration

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// benchH2 is a small HTTP/2 client for the throughput benchmarks: CONNECT
// streams over one TLS connection to the proxy, nothing else. It exists
// because x/net's client was the bottleneck there (it let the proxy's
// downloads run into the stream window): it returns flow-control window
// for every 4 KiB it reads, a WINDOW_UPDATE record for every TLS record of
// data, and copies each DATA payload from its frame buffer into a pipe
// and out again. benchH2, as Chrome does, returns window when half of it
// was consumed, copies a payload straight into a waiting Read's buffer,
// and has no reader goroutine (see await). It still speaks real HTTP/2 to the real binary: SETTINGS, HPACK,
// flow control both ways, END_STREAM, RST_STREAM.
type benchH2 struct {
	tc *tls.Conn

	wmu  sync.Mutex // one frame written at a time, in HPACK order
	wbuf bytes.Buffer
	wfr  *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu           sync.Mutex
	streams      map[uint32]*benchStream
	nextID       uint32
	sendConn     int64 // connection window the proxy granted
	peerInit     int64
	peerMaxFrame int
	connUnacked  int64
	err          error
	rfr          *http2.Framer  // used by the goroutine in the reader role
	reading      bool           // a waiting goroutine is reading frames
	waiters      []*benchStream // the others waiting, oldest first
}

const (
	// Chromium's own (seen here: Chromium 156 sends HEADER_TABLE_SIZE
	// 65536, ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 6 MiB, MAX_HEADER_LIST_SIZE
	// 256 KiB and no MAX_FRAME_SIZE, so DATA frames stay within 16 KiB),
	// and its 15 MiB connection window.
	benchStreamWindow = 6 << 20
	benchConnWindow   = 15 << 20
	// dataChunk is the largest DATA payload sent: Chrome's, 16 KiB less
	// the 9-byte frame header, so that a frame fills one TLS record
	// instead of spilling 9 bytes into a second one.
	dataChunk = 16<<10 - 9
)

// benchStream is one CONNECT stream; it is a net.Conn for tls.Client.
type benchStream struct {
	h           *benchH2
	id          uint32
	cond        *sync.Cond // guarded by h.mu
	status      int
	queue       []*[]byte // received DATA payloads, not yet read, oldest first (pooled)
	qoff        int       // bytes of queue[0] already read
	rdst        []byte    // a waiting Read's buffer, not yet filled
	rgot        int       // bytes copied into it
	ended       bool      // END_STREAM received
	reset       error
	sendWin     int64
	unacked     int64
	localEnded  bool
	remoteEnded bool
}

func dialBenchH2(b *testing.B, p *Proxy) *benchH2 {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", p.Addr, p.TLSConfig("h2"))
	if err != nil {
		b.Fatal(err)
	}
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		b.Fatal("no h2")
	}
	h := &benchH2{tc: c, streams: map[uint32]*benchStream{}, nextID: 1,
		sendConn: 65535, peerInit: 65535, peerMaxFrame: 16 << 10}
	h.wfr = http2.NewFramer(&h.wbuf, nil)
	h.henc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		b.Fatal(err)
	}
	h.write(func() error {
		return h.wfr.WriteSettings(
			http2.Setting{ID: http2.SettingHeaderTableSize, Val: 65536},
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: benchStreamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 256 << 10})
	})
	h.write(func() error { return h.wfr.WriteWindowUpdate(0, benchConnWindow-65535) })
	h.rfr = http2.NewFramer(nil, c)
	h.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	b.Cleanup(func() { c.Close() })
	return h
}

// write encodes one frame with fn and sends it in one TLS write.
func (h *benchH2) write(fn func() error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.writeLocked(fn)
}

func (h *benchH2) writeLocked(fn func() error) error {
	h.wbuf.Reset()
	if err := fn(); err != nil {
		return err
	}
	_, err := h.tc.Write(h.wbuf.Bytes())
	return err
}

// await waits, with h.mu held, until ready() holds or the connection
// failed. There is no reader goroutine: a goroutine that waits reads
// frames itself while no other does (and the others wait for the frames
// it hands them), so a lone stream's Read takes its DATA without a switch
// to another goroutine, as an HTTP/1.1 client reading its socket does.
func (h *benchH2) await(s *benchStream, ready func() bool) {
	for !ready() && h.err == nil {
		if h.reading {
			h.waiters = append(h.waiters, s)
			s.cond.Wait()
			h.waiters = slices.DeleteFunc(h.waiters, func(w *benchStream) bool { return w == s })
			continue
		}
		h.reading = true
		reply := h.readOne()
		h.reading = false
		if reply != nil {
			h.mu.Unlock()
			_ = h.write(reply)
			h.mu.Lock()
		}
	}
	if !h.reading && len(h.waiters) > 0 {
		h.waiters[0].cond.Broadcast() // someone must read on
	}
}

// readOne reads and applies one frame; h.mu is held except while reading.
// It returns a reply to write, if any.
func (h *benchH2) readOne() (reply func() error) {
	h.mu.Unlock()
	fh, err := h.rfr.ReadFrameHeader()
	var f http2.Frame
	if err == nil && fh.Type == http2.FrameData && fh.StreamID != 0 && !fh.Flags.Has(http2.FlagDataPadded) {
		h.mu.Lock()
		if err = h.readData(fh); err == nil {
			return nil
		}
	} else {
		if err == nil {
			f, err = h.rfr.ReadFrameForHeader(fh)
		}
		h.mu.Lock()
	}
	if err != nil {
		h.err = err
		for _, s := range h.streams {
			s.cond.Broadcast()
		}
		return nil
	}
	var s *benchStream
	if id := f.Header().StreamID; id != 0 {
		s = h.streams[id]
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			_ = f.ForeachSetting(func(st http2.Setting) error {
				switch st.ID {
				case http2.SettingInitialWindowSize:
					for _, s := range h.streams {
						s.sendWin += int64(st.Val) - h.peerInit
					}
					h.peerInit = int64(st.Val)
				case http2.SettingMaxFrameSize:
					h.peerMaxFrame = int(st.Val)
				}
				return nil
			})
			reply = h.wfr.WriteSettingsAck
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			reply = func() error { return h.wfr.WritePing(true, data) }
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			h.sendConn += int64(f.Increment)
		} else if s != nil {
			s.sendWin += int64(f.Increment)
		}
	case *http2.MetaHeadersFrame:
		if s != nil {
			s.status = 1
			if v := f.PseudoValue("status"); len(v) == 3 {
				s.status = int(v[0]-'0')*100 + int(v[1]-'0')*10 + int(v[2]-'0')
			}
			s.remoteEnded = s.remoteEnded || f.StreamEnded()
			s.ended = s.remoteEnded
		}
	case *http2.DataFrame: // padded (see readData for the others)
		if s != nil {
			if len(f.Data()) > 0 {
				b := payloadPool.Get().(*[]byte)
				*b = append((*b)[:0], f.Data()...)
				s.queue = append(s.queue, b)
			}
			if f.StreamEnded() {
				s.ended, s.remoteEnded = true, true
			}
		}
	case *http2.RSTStreamFrame:
		if s != nil {
			s.reset = http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode}
		}
	case *http2.GoAwayFrame:
		if f.ErrCode != http2.ErrCodeNo {
			h.err = errors.New("GOAWAY " + f.ErrCode.String())
		}
	}
	// A stream's Read and Write may both wait on its cond: wake both.
	if s != nil {
		s.cond.Broadcast()
	}
	if f.Header().StreamID == 0 {
		for _, s := range h.waiters {
			s.cond.Broadcast()
		}
	}
	return reply
}

// payloadPool holds DATA payload buffers: a frame is read from the
// socket straight into one and queued as it is, so a payload is copied
// once more only when the stream's Read takes it, as an HTTP/1.1 client
// copies what it reads from its socket once.
var payloadPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// readData reads the payload of the DATA frame fh: straight into the
// buffer of the stream's waiting Read when it has room and nothing is
// queued, otherwise into a pooled buffer queued on the stream. h.mu is
// held on entry and on return, and released while reading.
func (h *benchH2) readData(fh http2.FrameHeader) error {
	s := h.streams[fh.StreamID]
	n := int(fh.Length)
	// Not once rgot moved: the Read may then take what it has (and its
	// buffer back) while this frame is being read.
	direct := s != nil && len(s.queue) == 0 && s.rgot == 0 && len(s.rdst) >= n
	var dst []byte
	var b *[]byte
	if direct {
		// Safe to fill without the lock: the stream's Read waits until
		// rgot moves, and only this goroutine reads frames.
		dst = s.rdst[:n]
	} else {
		b = payloadPool.Get().(*[]byte)
		if cap(*b) < n {
			*b = make([]byte, 0, n)
		}
		dst = (*b)[:n]
	}
	h.mu.Unlock()
	_, err := io.ReadFull(h.tc, dst)
	h.mu.Lock()
	if err != nil {
		if b != nil {
			payloadPool.Put(b)
		}
		return err
	}
	switch {
	case s == nil:
		payloadPool.Put(b)
		return nil
	case direct:
		s.rdst, s.rgot = s.rdst[n:], s.rgot+n
	case n > 0:
		*b = dst
		s.queue = append(s.queue, b)
	default:
		payloadPool.Put(b)
	}
	if fh.Flags.Has(http2.FlagDataEndStream) {
		s.ended, s.remoteEnded = true, true
	}
	s.cond.Broadcast()
	return nil
}

// connect opens a CONNECT stream to authority and waits for its 200.
func (h *benchH2) connect(b *testing.B, authority string) *benchStream {
	// Stream ids must reach the wire in increasing order (RFC 9113
	// §5.1.1): allocate under the write lock.
	h.wmu.Lock()
	h.mu.Lock()
	s := &benchStream{h: h, id: h.nextID, sendWin: h.peerInit}
	s.cond = sync.NewCond(&h.mu)
	h.nextID += 2
	h.streams[s.id] = s
	h.mu.Unlock()
	err := h.writeLocked(func() error {
		h.hbuf.Reset()
		_ = h.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		_ = h.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
		return h.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: h.hbuf.Bytes(), EndHeaders: true})
	})
	h.wmu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.await(s, func() bool { return s.status != 0 || s.reset != nil })
	if s.status != 200 {
		b.Fatalf("CONNECT %s: status %d, reset %v, conn %v", authority, s.status, s.reset, h.err)
	}
	return s
}

func (s *benchStream) Read(p []byte) (int, error) {
	h := s.h
	h.mu.Lock()
	s.rdst = p // frames for s may be copied straight into p
	h.await(s, func() bool { return s.rgot > 0 || len(s.queue) > 0 || s.ended || s.reset != nil })
	n := s.rgot
	s.rdst, s.rgot = nil, 0
	if n == 0 && len(s.queue) == 0 {
		defer h.mu.Unlock()
		switch {
		case s.reset != nil:
			return 0, s.reset
		case s.ended:
			return 0, io.EOF
		}
		return 0, h.err
	}
	if n == 0 {
		for n < len(p) && len(s.queue) > 0 {
			b := *s.queue[0]
			k := copy(p[n:], b[s.qoff:])
			n += k
			if s.qoff += k; s.qoff == len(b) {
				payloadPool.Put(s.queue[0])
				s.queue[0] = nil
				s.queue, s.qoff = s.queue[1:], 0
			}
		}
	}
	// Return window in halves of it, on the stream and the connection.
	s.unacked += int64(n)
	h.connUnacked += int64(n)
	var sInc, cInc int64
	if s.unacked >= benchStreamWindow/2 && !s.remoteEnded {
		sInc, s.unacked = s.unacked, 0
	}
	if h.connUnacked >= benchConnWindow/2 {
		cInc, h.connUnacked = h.connUnacked, 0
	}
	h.mu.Unlock()
	if cInc > 0 {
		_ = h.write(func() error { return h.wfr.WriteWindowUpdate(0, uint32(cInc)) })
	}
	if sInc > 0 {
		_ = h.write(func() error { return h.wfr.WriteWindowUpdate(s.id, uint32(sInc)) })
	}
	return n, nil
}

func (s *benchStream) Write(p []byte) (int, error) {
	h := s.h
	total := 0
	for len(p) > 0 {
		h.mu.Lock()
		h.await(s, func() bool { return s.sendWin > 0 && h.sendConn > 0 || s.reset != nil })
		if err := s.reset; err != nil || h.err != nil {
			h.mu.Unlock()
			if err == nil {
				err = h.err
			}
			return total, err
		}
		n := min(len(p), int(s.sendWin), int(h.sendConn), h.peerMaxFrame, dataChunk)
		s.sendWin -= int64(n)
		h.sendConn -= int64(n)
		h.mu.Unlock()
		chunk := p[:n]
		if err := h.write(func() error { return h.wfr.WriteData(s.id, false, chunk) }); err != nil {
			return total, err
		}
		p = p[n:]
		total += n
	}
	return total, nil
}

// CloseWrite sends END_STREAM.
func (s *benchStream) CloseWrite() error {
	h := s.h
	h.mu.Lock()
	if s.localEnded {
		h.mu.Unlock()
		return nil
	}
	s.localEnded = true
	h.mu.Unlock()
	return h.write(func() error { return h.wfr.WriteData(s.id, true, nil) })
}

// Close ends the stream: END_STREAM if not sent, RST_STREAM(CANCEL) if the
// proxy's side has not ended.
func (s *benchStream) Close() error {
	_ = s.CloseWrite()
	h := s.h
	h.mu.Lock()
	open := !s.remoteEnded && s.reset == nil
	delete(h.streams, s.id)
	h.mu.Unlock()
	if open {
		return h.write(func() error { return h.wfr.WriteRSTStream(s.id, http2.ErrCodeCancel) })
	}
	return nil
}

func (s *benchStream) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *benchStream) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *benchStream) SetDeadline(time.Time) error      { return nil }
func (s *benchStream) SetReadDeadline(time.Time) error  { return nil }
func (s *benchStream) SetWriteDeadline(time.Time) error { return nil }

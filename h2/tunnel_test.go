package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/h2proxy/h2proxy/tunnel"
)

// target is a loopback TCP server whose single connection is handed to fn.
func target(t *testing.T, fn func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c.(*net.TCPConn))
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// tunnelHandler accepts CONNECT and splices to addr, the way proxy does.
func tunnelHandler(addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tc, err := net.Dial("tcp", addr)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		c, err := Accept(w, r, http.Header{"X-Tunnel": {"yes"}})
		if err != nil {
			_ = tc.Close()
			return
		}
		_, _ = tunnel.Splice(r.Context(), c, tunnel.NetConn(tc, nil), tunnel.Options{})
	})
}

// openTunnel sends CONNECT on stream 1 and waits for the 200.
func openTunnel(t *testing.T, rc *rawClient) {
	t.Helper()
	rc.handshake()
	rc.headers(1, false, ":method", "CONNECT", ":authority", "target.test:443")
	f := rc.readUntil(func(f http2.Frame) bool { return f.Header().StreamID == 1 })
	mh, ok := f.(*http2.MetaHeadersFrame)
	if !ok || mh.PseudoValue("status") != "200" || mh.StreamEnded() {
		t.Fatalf("CONNECT answer: %v", f)
	}
}

// syncPing makes sure every frame the server wrote before its PING ack
// was read, and reports whether stream 1 was reset meanwhile.
func syncPing(t *testing.T, rc *rawClient) (reset *http2.ErrCode) {
	t.Helper()
	rc.must(rc.fr.WritePing(false, [8]byte{1}))
	rc.readUntil(func(f http2.Frame) bool {
		if rs, ok := f.(*http2.RSTStreamFrame); ok && rs.StreamID == 1 {
			code := rs.ErrCode
			reset = &code
		}
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck()
	})
	return reset
}

func TestTunnelEndStreamIsFIN(t *testing.T) {
	addr := target(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c) // until the FIN that END_STREAM became
		if err != nil {
			return
		}
		_, _ = c.Write(append([]byte("got:"), got...))
		_ = c.CloseWrite()
	})
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	rc.must(rc.fr.WriteData(1, false, []byte("ping ")))
	rc.must(rc.fr.WriteData(1, true, []byte("pong")))
	r := rc.readResponse(1)
	if string(r.body) != "got:ping pong" || !r.ended || r.rst != nil {
		t.Fatalf("tunnel answer %q ended=%v rst=%v", r.body, r.ended, r.rst)
	}
	if code := syncPing(t, rc); code != nil {
		t.Fatalf("clean tunnel reset with %v", *code)
	}
}

func TestTunnelHalfCloseFromTarget(t *testing.T) {
	rest := make(chan string, 1)
	addr := target(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("bye"))
		_ = c.CloseWrite() // FIN first; keep reading
		b, _ := io.ReadAll(c)
		rest <- string(b)
	})
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	r := rc.readResponse(1)
	if string(r.body) != "bye" || !r.ended {
		t.Fatalf("got %q ended=%v rst=%v", r.body, r.ended, r.rst)
	}
	// The client's direction is still open after our END_STREAM.
	rc.must(rc.fr.WriteData(1, false, []byte("still ")))
	rc.must(rc.fr.WriteData(1, true, []byte("here")))
	select {
	case got := <-rest:
		if got != "still here" {
			t.Fatalf("target read %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target never saw the client's data and FIN")
	}
	if code := syncPing(t, rc); code != nil {
		t.Fatalf("half-closed tunnel reset with %v", *code)
	}
}

func TestTunnelTargetResetIsConnectError(t *testing.T) {
	addr := target(t, func(c *net.TCPConn) {
		var b [1]byte
		_, _ = c.Read(b[:])
		_ = c.SetLinger(0)
		_ = c.Close() // TCP RST
	})
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	rc.must(rc.fr.WriteData(1, false, []byte("x")))
	rc.expectReset(1, http2.ErrCodeConnect)
}

// clientGoneTarget reports the error the target's read ends with.
func clientGoneTarget(t *testing.T) (string, chan error) {
	readErr := make(chan error, 1)
	addr := target(t, func(c *net.TCPConn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			readErr <- err
			return
		}
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		readErr <- err
	})
	return addr, readErr
}

func expectTargetReset(t *testing.T, readErr chan error) {
	t.Helper()
	select {
	case err := <-readErr:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("target read ended with %v, want ECONNRESET", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target never saw the reset")
	}
}

func TestTunnelClientResetIsTCPReset(t *testing.T) {
	addr, readErr := clientGoneTarget(t)
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	rc.must(rc.fr.WriteData(1, false, []byte("x")))
	rc.must(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	expectTargetReset(t, readErr)
}

func TestTunnelHeadersFrameIsStreamError(t *testing.T) {
	addr, readErr := clientGoneTarget(t)
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	rc.must(rc.fr.WriteData(1, false, []byte("x")))
	rc.headers(1, true, "x-trailer", "1") // §8.5: only DATA and stream management
	rc.expectReset(1, http2.ErrCodeProtocol)
	expectTargetReset(t, readErr)
}

func TestTunnelBulkBothWays(t *testing.T) {
	const size, upload = 4 << 20, 1<<20 - 16<<10
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	addr := target(t, func(c *net.TCPConn) {
		go func() {
			_, _ = c.Write(payload)
			_ = c.CloseWrite()
		}()
		n, _ := io.Copy(io.Discard, c)
		if n != upload {
			t.Errorf("target read %d bytes, want %d", n, upload)
		}
	})
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	// Upload within the advertised stream window (1 MiB) and connection
	// window while reading the download.
	errc := make(chan error, 1)
	go func() {
		var err error
		sent := 0
		for sent < upload && err == nil {
			rc.wmu.Lock()
			err = rc.fr.WriteData(1, false, payload[:16<<10])
			rc.wmu.Unlock()
			sent += 16 << 10
		}
		errc <- err
	}()
	r := rc.readResponse(1)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(r.body) != size || !bytes.Equal(r.body, payload) || !r.ended {
		t.Fatalf("download %d bytes ended=%v rst=%v", len(r.body), r.ended, r.rst)
	}
	rc.must(rc.fr.WriteData(1, true, nil))
	if code := syncPing(t, rc); code != nil {
		t.Fatalf("reset %v", *code)
	}
}

func TestAbortCodes(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  http2.ErrCode
	}{
		{&tunnel.Error{Side: tunnel.Target, Err: syscall.ECONNRESET}, http2.ErrCodeConnect},
		{&tunnel.Error{Side: tunnel.Client, Err: io.ErrUnexpectedEOF}, http2.ErrCodeCancel},
		{tunnel.ErrIdle, http2.ErrCodeCancel},
		{errors.New("other"), http2.ErrCodeInternal},
	} {
		if got := abortCode(tc.cause); got != tc.want {
			t.Errorf("abortCode(%v) = %v, want %v", tc.cause, got, tc.want)
		}
	}
}

// RST_STREAM(NO_ERROR) after our END_STREAM is the client's clean end
// (the mirror of RFC 9113 §8.1): the target gets a FIN, not a reset.
func TestTunnelClientNoErrorResetAfterEndIsFIN(t *testing.T) {
	readErr := make(chan error, 1)
	addr := target(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("bye"))
		_ = c.CloseWrite()
		_, err := io.Copy(io.Discard, c)
		readErr <- err
	})
	rc := newRawClient(t, Config{}, tunnelHandler(addr), false)
	openTunnel(t, rc)
	if r := rc.readResponse(1); string(r.body) != "bye" || !r.ended {
		t.Fatalf("got %q ended=%v", r.body, r.ended)
	}
	rc.must(rc.fr.WriteRSTStream(1, http2.ErrCodeNo))
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("target read ended with %v, want a clean EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target never saw the end")
	}
}

// A detached tunnel (Detach) outlives its handler: data and half-close
// still pass, and its handler slot is freed only when the tunnel ends, so
// MaxConcurrentStreams keeps bounding the goroutines behind streams.
func TestTunnelDetached(t *testing.T) {
	addr := target(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = c.Write(append([]byte("got:"), got...))
		_ = c.CloseWrite()
	})
	returned := make(chan struct{}, 1)
	spliced := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		tc, err := net.Dial("tcp", addr)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		c, err := Accept(w, r, nil)
		if err != nil {
			_ = tc.Close()
			return
		}
		if err := Detach(w); err != nil {
			t.Error(err)
		}
		go func() {
			defer close(spliced)
			<-returned // the splice starts only once the handler is gone
			_, _ = tunnel.Splice(r.Context(), c, tunnel.NetConn(tc, nil), tunnel.Options{})
		}()
		returned <- struct{}{}
	})
	rc := newRawClient(t, Config{MaxConcurrentStreams: 1}, h, false)
	openTunnel(t, rc)
	rc.must(rc.fr.WriteData(1, false, []byte("ping ")))
	rc.must(rc.fr.WriteData(1, true, []byte("pong")))
	r := rc.readResponse(1)
	if string(r.body) != "got:ping pong" || !r.ended || r.rst != nil {
		t.Fatalf("tunnel answer %q ended=%v rst=%v", r.body, r.ended, r.rst)
	}
	<-spliced
	// With one handler slot, stream 3 runs only if the tunnel gave it back.
	rc.get(3, "/")
	if r := rc.readResponse(3); r.status != http.StatusNoContent {
		t.Fatalf("stream after a detached tunnel: %+v", r)
	}
}

// ReadLazy tells the caller before it waits, asks for a buffer only once
// DATA is there, and reports END_STREAM without asking for one.
func TestTunnelReadLazy(t *testing.T) {
	idled := make(chan struct{}, 1)
	result := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			result <- err.Error()
			return
		}
		defer c.Close()
		lr := c.(tunnel.LazyReader)
		var buf []byte
		idles, bufs := 0, 0
		get := func() []byte { bufs++; buf = make([]byte, 64); return buf }
		n, err := lr.ReadLazy(func() { idles++; idled <- struct{}{} }, get)
		first := fmt.Sprintf("%q %v idle=%d buf=%d", buf[:n], err, idles, bufs)
		n, err = lr.ReadLazy(func() {}, get)
		result <- fmt.Sprintf("%s | %d %v buf=%d", first, n, err, bufs)
	})
	rc := newRawClient(t, Config{}, h, false)
	openTunnel(t, rc)
	<-idled // nothing sent yet: the reader must have said it waits
	rc.must(rc.fr.WriteData(1, true, []byte("hello")))
	if got, want := <-result, `"hello" <nil> idle=1 buf=1 | 0 EOF buf=1`; got != want {
		t.Fatalf("ReadLazy: %s, want %s", got, want)
	}
}

// A tunnel's Write that waits for another goroutine's turn at the
// connection (see stream.write) ends as soon as its stream is reset, not
// when that other write ends: here the other write is stuck for good on
// a client that stopped reading.
func TestTunnelWriteWaitingForTurnEndsOnReset(t *testing.T) {
	startA, startB := make(chan struct{}), make(chan struct{})
	errB := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			return
		}
		switch r.Host {
		case "a.test:443":
			<-startA
			_, _ = c.Write(make([]byte, 1<<20)) // ends when the client closes
		case "b.test:443":
			<-startB
			_, err := c.Write(make([]byte, 1024))
			errB <- err
		}
		c.Abort(errors.New("done"))
	})
	// net.Pipe: a server write blocks until the client reads it all. The
	// write timeout is far beyond the test's, so only the reset can end
	// the waiting Write.
	rc := newRawClient(t, Config{WriteTimeout: time.Minute}, h, true)
	rc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	rc.must(rc.fr.WriteWindowUpdate(0, 4<<20))
	for _, st := range []struct {
		id   uint32
		host string
	}{{1, "a.test:443"}, {3, "b.test:443"}} {
		rc.headers(st.id, false, ":method", "CONNECT", ":authority", st.host)
		rc.readUntil(func(f http2.Frame) bool {
			mh, ok := f.(*http2.MetaHeadersFrame)
			return ok && mh.StreamID == st.id && mh.PseudoValue("status") == "200"
		})
	}
	// A's first batch is 64 KiB; reading one frame of it leaves A inside
	// its write to the connection, holding the turn, for good.
	close(startA)
	rc.readUntil(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
	close(startB)
	// Reset B only once its Write waits for the turn: sooner, the Write
	// would see the reset before it waited and prove nothing.
	waitParked(t, "sync.(*Cond).Wait", "h2.(*stream).write")
	rc.must(rc.fr.WriteRSTStream(3, http2.ErrCodeCancel))
	select {
	case err := <-errB:
		var se *StreamError
		if !errors.As(err, &se) || se.Code != http2.ErrCodeCancel || !se.Remote {
			t.Fatalf("B's Write returned %v, want the client's reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B's Write still waits after its stream was reset")
	}
}

// waitParked waits until some goroutine's stack holds every one of frames,
// in order from the innermost: a readiness check for a goroutine that
// blocks where the test cannot see it.
func waitParked(t *testing.T, frames ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		all := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(all, "\n\n") {
			rest, ok := g, true
			for _, f := range frames {
				i := strings.Index(rest, f)
				if i < 0 {
					ok = false
					break
				}
				rest = rest[i+len(f):]
			}
			if ok {
				return
			}
		}
		runtime.Gosched()
	}
	t.Fatalf("no goroutine parked in %v", frames)
}

// A client that stops reading its connection: the write that holds the
// turn fails at the write timeout, and the tunnel writes waiting behind it
// fail with it instead of hanging; the connection closes.
func TestTunnelWritesEndWhenClientStopsReading(t *testing.T) {
	errs := make(chan error, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			return
		}
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				errs <- err
				return
			}
		}
	})
	rc := newRawClient(t, Config{WriteTimeout: 200 * time.Millisecond}, h, true)
	rc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	rc.must(rc.fr.WriteWindowUpdate(0, 4<<20))
	rc.headers(1, false, ":method", "CONNECT", ":authority", "a.test:443")
	rc.headers(3, false, ":method", "CONNECT", ":authority", "b.test:443")
	// Read until both tunnels send data, then stop reading for good.
	got := map[uint32]bool{}
	rc.readUntil(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got[d.StreamID] = true
		}
		return got[1] && got[3]
	})
	for range 2 {
		select {
		case err := <-errs:
			if err == nil {
				t.Fatal("a tunnel Write succeeded on a connection nobody reads")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a tunnel Write still waits on a connection nobody reads")
		}
	}
	_ = rc.serveResult() // the connection closes
}

// A tunnel's upload goes to its target on the connection's reader
// goroutine while the tunnel waits (tunnel.Pusher). What a push does not
// take the tunnel reads itself, after what was pushed; pushed bytes count
// as consumed, so the client's window opens again (here a minimal window,
// four times over). Only a lone stream's push may wait for room in its
// target's socket: with a second stream open, pushes never wait, since
// the other stream's frames would wait with them.
func TestTunnelPush(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other bool // open a second tunnel first
	}{{"lone", false}, {"shared", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 4 * minWindow
			var mu sync.Mutex
			var got []byte
			pushes, waits := 0, 0
			done := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := Accept(w, r, nil)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				if r.Host == "other.test:443" {
					<-r.Context().Done()
					return
				}
				c.(tunnel.Pusher).SetPush(func(pieces [][]byte, wait bool) int {
					mu.Lock()
					defer mu.Unlock()
					pushes++
					if wait {
						waits++
					}
					p := bytes.Join(pieces, nil)
					n := len(p)
					if pushes%4 == 0 {
						n = min(n, 1000) // a target with little room
					}
					got = append(got, p[:n]...)
					return n
				})
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					mu.Lock()
					got = append(got, buf[:n]...)
					mu.Unlock()
					if err != nil {
						done <- err
						return
					}
				}
			})
			rc := newRawClient(t, Config{StreamWindow: minWindow, ConnWindow: minWindow}, h, false)
			id := uint32(1)
			rc.handshake()
			if tc.other {
				rc.headers(id, false, ":method", "CONNECT", ":authority", "other.test:443")
				rc.readUntil(func(f http2.Frame) bool { return f.Header().StreamID == id })
				id = 3
			}
			rc.headers(id, false, ":method", "CONNECT", ":authority", "target.test:443")
			rc.readUntil(func(f http2.Frame) bool { return f.Header().StreamID == id })
			sent := make([]byte, total)
			for i := range sent {
				sent[i] = byte(i % 251)
			}
			streamWin, connWin := int64(minWindow), int64(minWindow)
			for p := sent; len(p) > 0; {
				for streamWin == 0 || connWin == 0 {
					f, err := rc.readFrame()
					rc.must(err)
					if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
						connWin += int64(wu.Increment)
					} else if ok && wu.StreamID == id {
						streamWin += int64(wu.Increment)
					}
				}
				n := min(len(p), minFrameSize, int(streamWin), int(connWin))
				rc.must(rc.fr.WriteData(id, false, p[:n]))
				p, streamWin, connWin = p[n:], streamWin-int64(n), connWin-int64(n)
			}
			rc.must(rc.fr.WriteData(id, true, nil))
			if err := <-done; err != io.EOF {
				t.Fatalf("tunnel read: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !bytes.Equal(got, sent) {
				t.Fatalf("target got %d bytes, not the %d sent in order", len(got), len(sent))
			}
			wantWaits := pushes // a lone stream's pushes may all wait
			if tc.other {
				wantWaits = 0
			}
			if pushes == 0 || waits != wantWaits {
				t.Fatalf("%d pushes, %d of them allowed to wait; want some, %d", pushes, waits, wantWaits)
			}
		})
	}
}

// pushLog serves tunnels whose target is a push that records the
// pieces of each push. The first push waits for release, so that a test
// can have all it sends in the server's socket before the reader goes on.
type pushLog struct {
	mu      sync.Mutex
	got     []byte  // pushed, then read by the tunnel
	pushes  [][]int // the piece sizes of each push
	release chan struct{}
	pushed  chan struct{}
	done    chan error // the tunnel's last Read error
	s       *stream    // the tunnel's, once it has push
}

func newPushLog() *pushLog {
	return &pushLog{release: make(chan struct{}), pushed: make(chan struct{}, 1), done: make(chan error, 1)}
}

func (l *pushLog) handler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		c.(tunnel.Pusher).SetPush(func(pieces [][]byte, wait bool) int {
			l.mu.Lock()
			first := len(l.pushes) == 0
			var sizes []int
			for _, p := range pieces {
				sizes = append(sizes, len(p))
				l.got = append(l.got, p...)
			}
			l.pushes = append(l.pushes, sizes)
			l.mu.Unlock()
			if first {
				<-l.release
			}
			signal(l.pushed)
			return len(bytes.Join(pieces, nil))
		})
		l.mu.Lock()
		l.s = c.(*tunnelConn).s
		l.mu.Unlock()
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			l.mu.Lock()
			l.got = append(l.got, buf[:n]...)
			l.mu.Unlock()
			if err != nil {
				l.done <- err
				return
			}
		}
	})
}

// state returns what the target got so far, and the pushes.
func (l *pushLog) state() ([]byte, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.got), fmt.Sprint(l.pushes)
}

// connectTLS opens a tunnel (stream 1) on a TLS connection whose server
// socket can call the reader back before it waits, as the proxy's can.
func (l *pushLog) connectTLS(t *testing.T) *rawClient {
	rc := newRawTLSClient(t, Config{}, l.handler(t))
	rc.handshake()
	rc.headers(1, false, ":method", "CONNECT", ":authority", "target.test:443")
	rc.readUntil(func(f http2.Frame) bool { return f.Header().StreamID == 1 })
	// DATA is pushed only while the tunnel waits in Read: wait for that.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		s := l.s
		l.mu.Unlock()
		if s != nil {
			s.c.mu.Lock()
			ok := s.c.pushable(s)
			s.c.mu.Unlock()
			if ok {
				return rc
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the tunnel never waited in Read with push set")
		}
	}
}

// Chrome's largest DATA payload, and the tail of a tunnelled TLS 1.3
// record (16 KiB and 22 bytes) beyond it.
const bigData, tailData = minFrameSize - frameHeaderLen, 31

// The small tail of each tunnelled TLS record is held back and pushed
// with the stream's next DATA, in one push; the last tail goes once
// nothing more comes from the client, though the stream is still open;
// and a tail still leaves before the END_STREAM that follows it.
func TestTunnelHoldsTails(t *testing.T) {
	const records = 3 // all within the initial TCP window
	l := newPushLog()
	rc := l.connectTLS(t)
	sent := make([]byte, records*(bigData+tailData))
	for i := range sent {
		sent[i] = byte(i % 251)
	}
	for p := sent; len(p) > 0; p = p[bigData+tailData:] {
		rc.must(rc.fr.WriteData(1, false, p[:bigData]))
		rc.must(rc.fr.WriteData(1, false, p[bigData:bigData+tailData]))
	}
	close(l.release)
	// The stream stays open: only the reader's finding nothing more to
	// read can let the last tail go.
	for {
		got, _ := l.state()
		if len(got) == len(sent) {
			break
		}
		select {
		case <-l.pushed:
		case <-time.After(5 * time.Second):
			t.Fatalf("the target got %d of %d bytes; the last tail was never pushed", len(got), len(sent))
		}
	}
	want := [][]int{{bigData}}
	for range records - 1 {
		want = append(want, []int{tailData, bigData})
	}
	want = append(want, []int{tailData})
	if got, pushes := l.state(); !bytes.Equal(got, sent) || pushes != fmt.Sprint(want) {
		t.Fatalf("pushes %v, want %v; in order: %v", pushes, want, bytes.Equal(got, sent))
	}

	// A tail, then END_STREAM: the tail first, then the end.
	rc.must(rc.fr.WriteData(1, false, sent[:tailData]))
	rc.must(rc.fr.WriteData(1, true, nil))
	if err := <-l.done; err != io.EOF {
		t.Fatalf("tunnel read: %v", err)
	}
	if got, _ := l.state(); !bytes.Equal(got[len(sent):], sent[:tailData]) {
		t.Fatalf("after the last record the target got %d bytes, want the %d-byte tail", len(got)-len(sent), tailData)
	}
}

// A held tail leaves before a frame that ends the stream otherwise: the
// client's RST_STREAM right behind it does not drop it.
func TestTunnelHeldTailBeforeReset(t *testing.T) {
	l := newPushLog()
	rc := l.connectTLS(t)
	sent := make([]byte, bigData+tailData)
	for i := range sent {
		sent[i] = byte(i % 251)
	}
	rc.must(rc.fr.WriteData(1, false, sent[:bigData]))
	rc.must(rc.fr.WriteData(1, false, sent[bigData:]))
	rc.must(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	close(l.release)
	if err := <-l.done; err == nil || err == io.EOF {
		t.Fatalf("tunnel read after the client's reset: %v, want the reset", err)
	}
	want := fmt.Sprint([][]int{{bigData}, {tailData}})
	if got, pushes := l.state(); !bytes.Equal(got, sent) || pushes != want {
		t.Fatalf("pushes %v, want %v (the tail before the reset); in order: %v", pushes, want, bytes.Equal(got, sent))
	}
}

// A tunnel's download goes out from Splice's buffer where it lies: each
// DATA frame's header in the 9 bytes in front of its payload, the first
// in the headroom, the next over the tail of the frame before it. The
// windows may end a frame anywhere; what they do not allow waits in the
// send buffer and follows in order.
func TestTunnelWriteHeadroomInPlace(t *testing.T) {
	const size, window = 40000, 20000 // two full frames and a part; the window ends the second early
	b := make([]byte, frameHeaderLen+size)
	for i := range size {
		b[frameHeaderLen+i] = pattern(0, i)
	}
	wrote := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			wrote <- err
			return
		}
		// Write once the connection has nothing else to send (the 200,
		// a SETTINGS ack), as a busy one takes the buffered path.
		ec := c.(*tunnelConn).s.c
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			ec.mu.Lock()
			quiet := !ec.writing && !ec.hasWork()
			ec.mu.Unlock()
			if quiet || time.Now().After(deadline) {
				break
			}
		}
		n, err := c.(tunnel.HeadroomWriter).WriteHeadroom(b)
		if err == nil && n != size {
			err = fmt.Errorf("WriteHeadroom took %d of %d bytes", n, size)
		}
		wrote <- err
		_ = c.CloseWrite()
		var one [1]byte
		_, _ = c.Read(one[:]) // until the client ends
		_ = c.Close()
	})
	rc := newRawTLSClient(t, Config{}, h)
	rc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	rc.headers(1, false, ":method", "CONNECT", ":authority", "target.test:443")
	var got []byte
	var sizes []int
	rc.readUntil(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			if len(d.Data()) > 0 { // END_STREAM may come alone
				got = append(got, d.Data()...)
				sizes = append(sizes, len(d.Data()))
			}
			if len(got) == window {
				rc.must(rc.fr.WriteWindowUpdate(1, size))
			}
			return d.StreamEnded()
		}
		return false
	})
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	full := tlsRecord - frameHeaderLen
	if want := []int{full, window - full, full, size - window - full}; !slices.Equal(sizes, want) {
		t.Errorf("DATA payloads of %v bytes, want %v", sizes, want)
	}
	for i, c := range got {
		if c != pattern(0, i) {
			t.Fatalf("byte %d of %d is %d, want %d", i, len(got), c, pattern(0, i))
		}
	}
	if len(got) != size {
		t.Fatalf("got %d bytes, want %d", len(got), size)
	}
	// The second frame was sent in place, not copied: its header is where
	// the first frame's payload ended.
	if h := b[full : full+frameHeaderLen]; !bytes.Equal(h, appendDataHeader(nil, window-full, 0, 1)) {
		t.Errorf("no DATA header in place after the first frame: % x", h)
	}
	rc.must(rc.fr.WriteData(1, true, nil))
}

// A tunnel's download is read from its target by the connection's writer
// (tunnel.Puller), only as far as the client's window allows: the rest
// stays in the target's socket. A window kept shut is bounded by
// WriteTimeout from the last data that moved: a client that opens it a
// little at a time, each time well within the timeout, keeps its tunnel
// for longer than the timeout; once it stops, the stream is reset with
// CANCEL and the target with a TCP RST.
func TestTunnelPullBoundedByWindow(t *testing.T) {
	const timeout = 500 * time.Millisecond
	const window, step, steps = 20000, 4000, 6
	readErr := make(chan error, 1)
	addr := target(t, func(c *net.TCPConn) {
		data := make([]byte, 1<<20) // far more than the windows allow
		for i := range data {
			data[i] = pattern(0, i)
		}
		go func() { _, _ = c.Write(data) }() // ends with the reset
		_, err := io.Copy(io.Discard, c)
		readErr <- err
	})
	rc := newRawClient(t, Config{WriteTimeout: timeout}, tunnelHandler(addr), false)
	rc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	rc.headers(1, false, ":method", "CONNECT", ":authority", "target.test:443")
	got := 0
	readTo := func(want int) {
		t.Helper()
		rc.readUntil(func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.DataFrame:
				for _, b := range f.Data() {
					if b != pattern(0, got) {
						t.Fatalf("byte %d is %d, want %d", got, b, pattern(0, got))
					}
					got++
				}
				if got > want {
					t.Fatalf("got %d bytes where the window allows %d", got, want)
				}
			case *http2.RSTStreamFrame:
				t.Fatalf("stream reset with %v after %d bytes", f.ErrCode, got)
			}
			return got == want
		})
	}
	readTo(window)
	// The tunnel waits for the window in Pull; no buffer holds the rest.
	waitParked(t, "h2.(*stream).pull", "tunnel.(*direction).runPull")
	for i := 1; i <= steps; i++ {
		time.Sleep(timeout / 5) // a slow client, not a readiness wait
		rc.must(rc.fr.WriteWindowUpdate(1, step))
		readTo(window + i*step)
	}
	rc.expectReset(1, http2.ErrCodeCancel)
	expectTargetReset(t, readErr)
}

package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// setup builds client <-> [proxy: Splice] <-> target over loopback TCP and
// returns the outer ends. hide decides whether the proxy ends are both
// plain TCP (kernel splice path) or not: then the client end is read
// through its RawConn and the hidden target end into Splice's buffers.
func setup(t *testing.T, opt Options, hide bool) (client, target *net.TCPConn, result chan error, stats chan Stats) {
	client, pc := tcpPair(t)
	pt, target := tcpPair(t)
	var a, b Conn = NetConn(pc, nil), NetConn(pt, nil)
	if hide {
		a, b = NetConn(pc, []byte{}), &hidden{NetConn(pt, nil)}
	}
	result, stats = make(chan error, 1), make(chan Stats, 1)
	go func() {
		st, err := Splice(context.Background(), a, b, opt)
		stats <- st
		result <- err
	}()
	return client, target, result, stats
}

// hidden hides the concrete type so that Splice uses the buffer path.
type hidden struct{ Conn }

func forBothPaths(t *testing.T, f func(t *testing.T, hide bool)) {
	t.Run("splice", func(t *testing.T) { f(t, false) })
	t.Run("buffered", func(t *testing.T) { f(t, true) })
}

func TestHalfCloseClientFirst(t *testing.T) {
	forBothPaths(t, func(t *testing.T, hide bool) {
		client, target, result, stats := setup(t, Options{}, hide)
		client.Write([]byte("request"))
		client.CloseWrite()
		got, err := io.ReadAll(target) // EOF proves the FIN crossed
		if err != nil || string(got) != "request" {
			t.Fatalf("target read %q, %v", got, err)
		}
		target.Write([]byte("late response")) // still flows after the client's FIN
		target.CloseWrite()
		got, err = io.ReadAll(client)
		if err != nil || string(got) != "late response" {
			t.Fatalf("client read %q, %v", got, err)
		}
		if err := <-result; err != nil {
			t.Fatalf("Splice = %v, want nil", err)
		}
		if st := <-stats; st.Up != 7 || st.Down != 13 {
			t.Fatalf("stats %+v, want up 7 down 13", st)
		}
	})
}

func TestHalfCloseTargetFirst(t *testing.T) {
	forBothPaths(t, func(t *testing.T, hide bool) {
		client, target, result, _ := setup(t, Options{}, hide)
		target.Write([]byte("banner"))
		target.CloseWrite()
		got, err := io.ReadAll(client)
		if err != nil || string(got) != "banner" {
			t.Fatalf("client read %q, %v", got, err)
		}
		client.Write([]byte("after"))
		client.CloseWrite()
		got, err = io.ReadAll(target)
		if err != nil || string(got) != "after" {
			t.Fatalf("target read %q, %v", got, err)
		}
		if err := <-result; err != nil {
			t.Fatalf("Splice = %v", err)
		}
	})
}

func TestTargetResetAbortsClient(t *testing.T) {
	forBothPaths(t, func(t *testing.T, hide bool) {
		client, target, result, _ := setup(t, Options{}, hide)
		client.Write([]byte("x"))
		buf := make([]byte, 1)
		io.ReadFull(target, buf)
		target.SetLinger(0)
		target.Close() // RST
		err := <-result
		var te *Error
		if !errors.As(err, &te) || te.Side != Target {
			t.Fatalf("Splice = %v, want a target *Error", err)
		}
		// The client must see a reset too, never a clean EOF.
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := io.ReadAll(client)
		if !errors.Is(rerr, syscall.ECONNRESET) {
			t.Fatalf("client read error = %v, want ECONNRESET", rerr)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	client, target, result, _ := setup(t, Options{IdleTimeout: 200 * time.Millisecond}, true)
	// Traffic keeps the tunnel alive past the timeout...
	for range 4 {
		client.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(target, buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ...and silence ends it.
	select {
	case err := <-result:
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("Splice = %v, want ErrIdle", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle tunnel not closed")
	}
}

func TestPendingBytesFirst(t *testing.T) {
	client, pc := tcpPair(t)
	pt, target := tcpPair(t)
	go Splice(context.Background(), NetConn(pc, []byte("early ")), NetConn(pt, nil), Options{})
	client.Write([]byte("late"))
	client.CloseWrite()
	got, _ := io.ReadAll(target)
	if !bytes.Equal(got, []byte("early late")) {
		t.Fatalf("target got %q", got)
	}
	target.Close()
	io.ReadAll(client)
}

// framer is a Conn that frames what it writes, using Splice's headroom:
// each write becomes a 4-byte length and the data.
type framer struct {
	Conn
	headroomWrites int
}

func (f *framer) WriteSize() int { return 1000 }
func (f *framer) Headroom() int  { return 4 }
func (f *framer) WriteHeadroom(b []byte) (int, error) {
	f.headroomWrites++
	n := len(b) - 4
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	if _, err := f.Conn.Write(b); err != nil {
		return 0, err
	}
	return n, nil
}
func (f *framer) Write(p []byte) (int, error) {
	b := append([]byte{byte(len(p) >> 24), byte(len(p) >> 16), byte(len(p) >> 8), byte(len(p))}, p...)
	if _, err := f.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Bulk data towards a HeadroomWriter arrives intact, framed from Splice's
// own buffer, in reads of at most a multiple of its WriteSize.
func TestSpliceHeadroom(t *testing.T) {
	client, pc := tcpPair(t)
	pt, target := tcpPair(t)
	f := &framer{Conn: NetConn(pc, nil)}
	done := make(chan error, 1)
	go func() {
		_, err := Splice(context.Background(), f, &hidden{NetConn(pt, nil)}, Options{})
		done <- err
	}()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		_, _ = target.Write(want)
		_ = target.CloseWrite()
	}()
	var got []byte
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(client, hdr[:]); err != nil {
			break
		}
		n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
		if max := (largeBuf - 4) / 1000 * 1000; n > max {
			t.Errorf("bulk frame of %d bytes, want at most %d (a multiple of WriteSize)", n, max)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(client, buf); err != nil {
			t.Fatal(err)
		}
		got = append(got, buf...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (equal prefix: %v)", len(got), len(want), bytes.HasPrefix(want, got))
	}
	_ = client.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.headroomWrites == 0 {
		t.Error("no write used the headroom")
	}
}

// records is a client Conn whose reads come as a TLS connection's do: at
// most the rest of one record each.
type records struct {
	sizes []int
	reads int
}

func (r *records) Read(p []byte) (int, error) {
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.sizes[0])
	if r.sizes[0] -= n; r.sizes[0] == 0 {
		r.sizes = r.sizes[1:]
	}
	r.reads++
	return n, nil
}
func (r *records) Write(p []byte) (int, error) { return len(p), nil }
func (r *records) CloseWrite() error           { return nil }
func (r *records) Close() error                { return nil }
func (r *records) Abort(error)                 {}

// A short read in a stream of full ones (the 22-byte tail that a 16406-byte
// inner TLS record leaves in a second outer record) is not a lull: the
// large buffer stays, so each record takes one read, where going back to
// the small buffer would split every full record into two reads and two
// writes.
func TestShortTailKeepsLargeBuffer(t *testing.T) {
	const pairs = 50
	src := &records{}
	for range pairs {
		src.sizes = append(src.sizes, 16<<10, 22)
	}
	pt, target := tcpPair(t)
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, target)
		_ = target.CloseWrite()
		got <- n
	}()
	if _, err := Splice(context.Background(), src, &hidden{NetConn(pt, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != pairs*(16<<10+22) {
		t.Fatalf("target got %d bytes", n)
	}
	// The first record is read into the small buffer first, then the rest.
	if want := 2*pairs + 1; src.reads != want {
		t.Errorf("%d reads for %d records, want %d", src.reads, 2*pairs, want)
	}
}

// A direction reading plain TCP takes the large buffer as data comes, so
// its first read is a large one, and gives it back before it waits.
func TestTCPReadHoldsNoBufferWhileWaiting(t *testing.T) {
	pc, peer := tcpPair(t)
	b := &copyBuf{}
	b.init(NetConn(pc, nil))
	if b.mode != readTCP {
		t.Fatal("plain TCP not read through its RawConn")
	}
	// Told not to block, a read on an empty socket says so, holding
	// nothing; the wait that follows ends when data comes.
	if _, _, err := b.read(false); err != errWouldBlock || b.large != nil {
		t.Fatalf("read on an empty socket = %v (large buffer held: %v), want errWouldBlock", err, b.large != nil)
	}
	go peer.Write([]byte("early"))
	if err := b.rr.waitReadable(); err != nil {
		t.Fatal(err)
	}
	if buf, n, err := b.read(false); err != nil || string(buf[:n]) != "early" {
		t.Fatalf("read after the wait = %q, %v", buf[:n], err)
	}
	read := blocking(b)
	const size = 40000
	go peer.Write(make([]byte, size))
	got := 0
	for got < size {
		_, n, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if got == 0 && n <= smallBuf {
			t.Errorf("first read of a burst took %d bytes, want a large buffer's worth", n)
		}
		got += n
	}
	expectWaitHoldsNothing(t, pc, b, read)
	peer.Close()
	if _, _, err := read(); err != io.EOF {
		t.Fatalf("read after the peer's FIN = %v, want io.EOF", err)
	}
}

// expectWaitHoldsNothing reads c, which has nothing to read, with a short
// deadline: the read must have waited for it, holding no large buffer.
func expectWaitHoldsNothing(t *testing.T, c net.Conn, b *copyBuf, read func() ([]byte, int, error)) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing to read = %v, want the deadline", err)
	}
	if b.large != nil {
		t.Error("the large buffer was held while waiting")
	}
	c.SetReadDeadline(time.Time{})
}

// blocking reads b's source as a Read does: when there is nothing to
// read, it waits and tries again.
func blocking(b *copyBuf) func() ([]byte, int, error) {
	return func() ([]byte, int, error) { return b.read(true) }
}

// Go returns at once and reports the tunnel's end to done, after traffic
// both ways with pauses between (each a wait handed to a new goroutine).
func TestGoReportsToDone(t *testing.T) {
	forBothPaths(t, func(t *testing.T, hide bool) {
		client, pc := tcpPair(t)
		pt, target := tcpPair(t)
		var a, b Conn = NetConn(pc, nil), NetConn(pt, nil)
		if hide {
			a, b = NetConn(pc, []byte{}), &hidden{NetConn(pt, nil)}
		}
		type result struct {
			st  Stats
			err error
		}
		done := make(chan result, 1)
		Go(context.Background(), a, b, Options{}, func(st Stats, err error) { done <- result{st, err} })
		buf := make([]byte, 4)
		for range 3 {
			client.Write([]byte("ping"))
			if _, err := io.ReadFull(target, buf); err != nil {
				t.Fatal(err)
			}
			target.Write([]byte("pong"))
			if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("client read %q, %v", buf, err)
			}
		}
		client.CloseWrite()
		if _, err := io.ReadAll(target); err != nil {
			t.Fatal(err)
		}
		target.CloseWrite()
		if _, err := io.ReadAll(client); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || r.st.Up != 12 || r.st.Down != 12 {
			t.Fatalf("done got %+v, %v; want 12 bytes each way and no error", r.st, r.err)
		}
	})
}

package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// testWriter lends a rawWriter for a's writes until the test ends.
func testWriter(t *testing.T, a *net.TCPConn) *rawWriter {
	raw, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	w := lendWriter(a, raw)
	t.Cleanup(w.giveBack)
	return w
}

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}

// writeAll's raw first attempt takes what the socket has room for; the
// rest waits for the peer to read, as a net.Conn Write does, so every
// byte arrives once and in order.
func TestWriteAllWaitsForRoom(t *testing.T) {
	a, b := tcpPair(t)
	w := testWriter(t, a)
	p := pattern(64 << 20) // far beyond both socket buffers
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := w.writeAll(p)
		done <- result{n, err}
	}()
	got := make([]byte, len(p))
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatalf("reading what writeAll wrote: %v", err)
	}
	if r := <-done; r.n != len(p) || r.err != nil {
		t.Fatalf("writeAll = %d, %v; want %d, nil", r.n, r.err, len(p))
	}
	if !bytes.Equal(got, p) {
		t.Fatal("the peer read other bytes than were written")
	}
}

// writeAll keeps the connection's write deadline: into a socket whose
// peer never reads it stops there, and says how much it wrote.
func TestWriteAllKeepsDeadline(t *testing.T) {
	a, b := tcpPair(t)
	w := testWriter(t, a)
	p := pattern(64 << 20)
	a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := w.writeAll(p)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(p) {
		t.Fatalf("writeAll past its deadline = %d, %v; want part of %d and a deadline error", n, err, len(p))
	}
	a.Close()
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(b)
	if !bytes.Equal(got, p[:n]) {
		t.Fatalf("the peer read %d bytes, want the first %d written", len(got), n)
	}
}

// The raw vectored calls skip empty pieces (an iovec needs a base) and
// fill or send the others in order.
func TestRawVectoredCalls(t *testing.T) {
	a, b := tcpPair(t)
	w := testWriter(t, a)
	if n := w.write([][]byte{nil, []byte("ab"), {}, []byte("cde")}, false); n != 5 {
		t.Fatalf("writev of 5 bytes in 4 pieces wrote %d", n)
	}
	r := newRawReader(b)
	if err := r.waitReadable(); err != nil {
		t.Fatal(err)
	}
	first, second := make([]byte, 3), make([]byte, 8)
	n, err := r.tryReadv([][]byte{{}, first, nil, second})
	if n != 5 || err != nil || string(first) != "abc" || string(second[:2]) != "de" {
		t.Fatalf("readv = %d, %v, %q %q; want 5 bytes as abc, de", n, err, first, second[:2])
	}
	if _, err := r.tryReadv([][]byte{first}); err != errWouldBlock {
		t.Fatalf("readv of an empty socket: %v, want errWouldBlock", err)
	}
	a.CloseWrite()
	if err := r.waitReadable(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tryReadv([][]byte{first}); err != io.EOF {
		t.Fatalf("readv after the peer's FIN: %v, want io.EOF", err)
	}
}

package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// recordingConn is a net.Conn that records each Write it gets.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestBatchConnGathersHeldWrites(t *testing.T) {
	rc := &recordingConn{}
	c := NewBatchConn(rc)

	c.Write([]byte("direct"))
	c.Hold()
	c.Write([]byte("a"))
	c.Hold() // nested: only the outer Flush writes
	c.Write([]byte("b"))
	if err := c.Flush(); err != nil || len(rc.writes) != 1 {
		t.Fatalf("inner Flush: %v, %d writes; want nothing sent yet", err, len(rc.writes))
	}
	c.Write([]byte("c"))
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 2 || string(rc.writes[0]) != "direct" || string(rc.writes[1]) != "abc" {
		t.Fatalf("writes %q, want [direct abc]", rc.writes)
	}
	if c.buf != nil {
		t.Fatal("buffer kept after Flush")
	}

	// A hold never gathers more than maxHeld.
	rc.writes = nil
	c.Hold()
	big := make([]byte, maxHeld/2+1)
	for range 3 {
		c.Write(big)
	}
	c.Flush()
	total := 0
	for _, w := range rc.writes {
		if len(w) > maxHeld {
			t.Fatalf("one write of %d bytes, above %d", len(w), maxHeld)
		}
		total += len(w)
	}
	if len(rc.writes) != 3 || total != 3*len(big) {
		t.Fatalf("%d writes, %d bytes", len(rc.writes), total)
	}
}

// Under TLS, a held large Write leaves as one write of whole records,
// which the peer decrypts as usual.
func TestBatchConnUnderTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert := selfSigned(t)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB: 8 records
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}))
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &countingConn{Conn: raw}
	bc := NewBatchConn(rc)
	tc := tls.Client(bc, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	before := rc.n
	bc.Hold()
	if _, err := tc.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := bc.Flush(); err != nil {
		t.Fatal(err)
	}
	if rc.n-before != 1 {
		t.Fatalf("%d socket writes for one held Write, want 1", rc.n-before)
	}
	if tcp, ok := bc.TCPConn(); !ok || tcp == nil {
		t.Fatal("TCPConn does not find the socket")
	}
	tc.Close()
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("peer read %d bytes, want %d", len(b), len(payload))
	}
}

type countingConn struct {
	net.Conn
	n int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.n++
	return c.Conn.Write(p)
}

func (c *countingConn) TCPConn() (*net.TCPConn, bool) {
	tcp, ok := c.Conn.(*net.TCPConn)
	return tcp, ok
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// halves writes each buffer in two parts with a pause between, so that
// the reader finds half a TLS record on the socket.
type halves struct{ net.Conn }

func (h halves) Write(p []byte) (int, error) {
	n, err := h.Conn.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(5 * time.Millisecond)
	m, err := h.Conn.Write(p[len(p)/2:])
	return n + m, err
}

// TLS over a BatchConn is read as plain TCP is: a large first read, no
// buffer held while waiting, and a record that arrived in halves is read
// whole (crypto/tls keeps the half across the read that would block).
func TestTLSReadHoldsNoBufferWhileWaiting(t *testing.T) {
	pc, peer := tcpPair(t)
	server := tls.Server(NewBatchConn(pc), &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	client := tls.Client(halves{peer}, &tls.Config{InsecureSkipVerify: true})
	want := make([]byte, 3*16<<10)
	for i := range want {
		want[i] = byte(i * 13)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := client.Write(want)
		sent <- err
	}()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	b := &copyBuf{}
	b.init(NetConn(server, nil))
	read := blocking(b)
	if b.mode != readTLS {
		t.Fatal("TLS over a BatchConn not read without waiting")
	}
	var got []byte
	for len(got) < len(want) {
		buf, n, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 && n <= smallBuf {
			t.Errorf("first read took %d bytes, want a record's worth", n)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data changed on the way")
	}
	expectWaitHoldsNothing(t, server, b, read)
	go client.Close() // close_notify
	if _, _, err := read(); err != io.EOF {
		t.Fatalf("read after close_notify = %v, want io.EOF", err)
	}
}

// OnWait's hook runs only when a Read finds the socket empty, once per
// such Read, before the Read waits; what arrives while it runs is read
// at once. Over anything but plain TCP it cannot be had.
func TestBatchConnOnWait(t *testing.T) {
	a, b := tcpPair(t)
	c := NewBatchConn(b)
	hooks := 0
	ok := c.OnWait(func() {
		hooks++
		switch hooks {
		case 1:
			// Data sent from the hook: the Read takes it without waiting
			// (had it waited, nothing more would ever come).
			if _, err := a.Write([]byte("late")); err != nil {
				t.Error(err)
			}
		case 2:
			// Data sent after the hook, most likely once the Read waits.
			go a.Write([]byte("last"))
		}
	})
	if !ok {
		t.Fatal("OnWait refused a BatchConn over TCP")
	}
	if _, err := a.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "early" || hooks != 0 {
		t.Fatalf("first Read: %q, %v after %d hooks; want \"early\" and no hook", buf[:n], err, hooks)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "late" || hooks != 1 {
		t.Fatalf("second Read: %q, %v after %d hooks; want \"late\" after one hook", buf[:n], err, hooks)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "last" || hooks != 2 {
		t.Fatalf("third Read: %q, %v after %d hooks; want \"last\" after one more hook", buf[:n], err, hooks)
	}
	a.Close()
	if n, err := c.Read(buf); err != io.EOF || n != 0 {
		t.Fatalf("Read after the peer closed: %d, %v; want io.EOF", n, err)
	}

	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if NewBatchConn(p1).OnWait(func() {}) {
		t.Fatal("OnWait accepted a BatchConn with no TCP socket underneath")
	}
}

package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pullConn is a client end that reads the download itself (Puller), as
// an HTTP/2 stream's writer does: each Pull reads until the target would
// block, into two small buffers at a time so that every read is scattered,
// and forwards what it read to its TCP connection.
type pullConn struct {
	Conn
	mu    sync.Mutex
	pulls int   // Pull calls
	dry   int   // Pulls that ended on an empty socket
	reads int   // reads that returned data
	fail  error // Pull returns this once set (the stream was reset)
}

func (c *pullConn) Pull(read func([][]byte) (int, error)) error {
	c.mu.Lock()
	c.pulls++
	fail := c.fail
	c.mu.Unlock()
	if fail != nil {
		return fail
	}
	a, b := make([]byte, 3), make([]byte, 5)
	for {
		n, err := read([][]byte{a, b})
		if n > 0 {
			c.mu.Lock()
			c.reads++
			c.mu.Unlock()
			got := append(append([]byte{}, a...), b...)[:n]
			if _, werr := c.Conn.Write(got); werr != nil {
				return werr
			}
		}
		if err == ErrWouldBlock {
			c.mu.Lock()
			c.dry++
			c.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (c *pullConn) counts() (pulls, dry, reads int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pulls, c.dry, c.reads
}

// waitDry waits until n Pulls have ended on an empty socket.
func (c *pullConn) waitDry(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); runtime.Gosched() {
		if _, dry, _ := c.counts(); dry >= n {
			return
		}
	}
	t.Fatalf("fewer than %d Pulls found the socket empty", n)
}

// setupPull builds client <-> [Splice] <-> target with a pulling client
// end and returns the outer ends.
func setupPull(t *testing.T) (client, target *net.TCPConn, pc *pullConn, result chan error, stats chan Stats) {
	client, near := tcpPair(t)
	far, target := tcpPair(t)
	pc = &pullConn{Conn: NetConn(near, nil)}
	result, stats = make(chan error, 1), make(chan Stats, 1)
	go func() {
		// pc is no plain TCP conn, so Splice copies (no kernel splice),
		// and the download goes to its Pull.
		st, err := Splice(context.Background(), pc, NetConn(far, nil), Options{})
		stats <- st
		result <- err
	}()
	return client, target, pc, result, stats
}

// A client end that is a Puller reads the download itself: a Pull per
// burst, ended by the empty socket; Splice waits for the next burst and
// pulls again; the target's FIN ends the last Pull with io.EOF, which is
// passed on as CloseWrite, and the bytes count.
func TestPullerReadsTheDownload(t *testing.T) {
	client, target, pc, result, stats := setupPull(t)
	buf := make([]byte, 64)
	for i, burst := range []string{"first burst", "second burst!"} {
		// The second burst comes once the first Pull found nothing more.
		pc.waitDry(t, i)
		if _, err := target.Write([]byte(burst)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf[:len(burst)]); err != nil || string(buf[:len(burst)]) != burst {
			t.Fatalf("burst %d: client read %q, %v", i, buf[:len(burst)], err)
		}
	}
	target.CloseWrite()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(client); err != nil || len(rest) != 0 {
		t.Fatalf("after the target's FIN the client read %q, %v; want a clean EOF", rest, err)
	}
	client.CloseWrite()
	if err := <-result; err != nil {
		t.Fatalf("Splice = %v, want nil", err)
	}
	if st := <-stats; st.Down != 24 || st.Up != 0 {
		t.Fatalf("stats %+v, want 24 bytes down", st)
	}
	// Each burst takes two reads of at most 8 bytes, and a Pull of its
	// own: the second came after the first Pull found the socket empty.
	if pulls, _, reads := pc.counts(); pulls < 2 || reads < 4 {
		t.Fatalf("%d Pulls with %d reads, want at least 2 and 4", pulls, reads)
	}
}

// firstByte moves one byte down the tunnel, so that it is established and
// pulling.
func firstByte(t *testing.T, client, target *net.TCPConn) {
	t.Helper()
	target.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
}

// The target's reset fails the read a Pull makes: Splice ends with the
// target's error and resets the client's side.
func TestPullerTargetReset(t *testing.T) {
	client, target, _, result, _ := setupPull(t)
	firstByte(t, client, target)
	target.SetLinger(0)
	target.Close() // RST
	var te *Error
	if err := <-result; !errors.As(err, &te) || te.Side != Target {
		t.Fatalf("Splice = %v, want a target *Error", err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read error = %v, want ECONNRESET", err)
	}
}

// An error of the Puller itself (its stream was reset) is the client's:
// Splice ends with it and resets the target.
func TestPullerOwnErrorIsClientSide(t *testing.T) {
	client, target, pc, result, _ := setupPull(t)
	firstByte(t, client, target)
	// Once the first Pull has found the socket empty: still running, it
	// would read the byte below itself and never fail.
	pc.waitDry(t, 1)
	reset := errors.New("stream reset")
	pc.mu.Lock()
	pc.fail = reset
	pc.mu.Unlock()
	target.Write([]byte("y")) // the next Pull fails
	var err error
	select {
	case err = <-result:
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not end after the Puller failed")
	}
	var te *Error
	if !errors.As(err, &te) || te.Side != Client || !errors.Is(err, reset) {
		t.Fatalf("Splice = %v, want the client's *Error wrapping the reset", err)
	}
	target.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(target); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("target read error = %v, want ECONNRESET", err)
	}
}

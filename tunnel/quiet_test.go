//go:build linux

package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// quietPair returns a quietConn and its peer, over loopback.
func quietPair(t *testing.T) (*quietConn, *net.TCPConn) {
	t.Helper()
	a, b := tcpPair(t)
	q := quiet(a)
	if q == nil {
		t.Fatal("quiet failed on a loopback socket")
	}
	t.Cleanup(func() { q.Close() })
	return q, b
}

// armed reports whether the socket's EPOLLIN is registered in in, as the
// kernel lists in's registrations (/proc/self/fdinfo).
func armed(t *testing.T, q *quietConn) bool {
	t.Helper()
	var info []byte
	if err := q.in.raw.Control(func(efd uintptr) {
		info, _ = os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(efd)))
	}); err != nil || info == nil {
		t.Fatalf("in's fdinfo: %v", err)
	}
	for line := range strings.Lines(string(info)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "tfd:" || f[1] != strconv.Itoa(q.fd) {
			continue
		}
		events, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil {
			t.Fatalf("in's fdinfo: %q", line)
		}
		return events&unix.EPOLLIN != 0
	}
	return false // not registered yet
}

// waitArmed waits until a read is waiting on q.
func waitArmed(t *testing.T, q *quietConn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !armed(t, q); {
		if time.Now().After(deadline) {
			t.Fatal("the read never waited")
		}
		runtime.Gosched()
	}
}

// wakeWaitingRead has r wait until q is readable, sends msg from q's peer
// once the wait is armed, and returns what the wait returned.
func wakeWaitingRead(t *testing.T, q *quietConn, r *rawReader, peer net.Conn, msg string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.waitReadable() }()
	waitArmed(t, q)
	if _, err := peer.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	return <-done
}

// The point of a quietConn: the socket's EPOLLIN is armed only while a
// read waits, and data that arrives otherwise (while a puller reads, say)
// reaches no poller. A wait that ends, with data or at its deadline,
// leaves it disarmed.
func TestQuietConnArmsOnlyWhileWaiting(t *testing.T) {
	q, peer := quietPair(t)
	r := newRawReader(q)
	buf := make([]byte, 64)
	if _, err := peer.Write([]byte("unasked")); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < len("unasked"); {
		n, err := r.tryRead(buf)
		if err != nil && err != errWouldBlock {
			t.Fatal(err)
		}
		got += n
	}
	if armed(t, q) {
		t.Fatal("armed by reads that did not wait")
	}

	if err := wakeWaitingRead(t, q, r, peer, "asked"); err != nil {
		t.Fatalf("a waiting read: %v", err)
	}
	if n, err := r.tryRead(buf); err != nil || string(buf[:n]) != "asked" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if armed(t, q) {
		t.Fatal("still armed after the wait ended")
	}

	q.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if err := r.waitReadable(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait past its deadline: %v", err)
	}
	if armed(t, q) {
		t.Fatal("still armed after a wait timed out")
	}
}

// As a net.Conn: reads wait for data and see the peer's FIN as EOF, a
// read deadline ends a wait with a timeout and a later read still works,
// writes wait for room until the peer reads, and CloseWrite sends a FIN.
func TestQuietConnAsNetConn(t *testing.T) {
	q, peer := quietPair(t)
	if q.LocalAddr().String() != peer.RemoteAddr().String() || q.RemoteAddr().String() != peer.LocalAddr().String() {
		t.Fatalf("addresses %v -> %v, peer %v -> %v", q.LocalAddr(), q.RemoteAddr(), peer.LocalAddr(), peer.RemoteAddr())
	}
	buf := make([]byte, 16)
	q.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := q.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	q.SetReadDeadline(time.Time{})
	go peer.Write([]byte("hello"))
	if n, err := q.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	// Far more than both sockets hold: the write must wait for the peer.
	p := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(peer)
		got <- all
	}()
	if n, err := q.Write(p); n != len(p) || err != nil {
		t.Fatalf("write: %d of %d, %v", n, len(p), err)
	}
	if err := q.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, p) {
		t.Fatalf("peer read %d bytes, want %d in order", len(all), len(p))
	}
	peer.CloseWrite()
	if n, err := q.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer's FIN: %d, %v", n, err)
	}
}

// A write deadline ends a wait for room with a timeout.
func TestQuietConnWriteDeadline(t *testing.T) {
	q, _ := quietPair(t) // the peer reads nothing
	q.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	p := make([]byte, 64<<20)
	n, err := q.Write(p)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(p) {
		t.Fatalf("write into a full socket: %d of %d, %v; want some, then a timeout", n, len(p), err)
	}
}

// Close wakes a waiting read with net.ErrClosed and closes every
// descriptor, out's too once a write has waited; an abort resets the
// connection.
func TestQuietConnClose(t *testing.T) {
	before, idleBefore := openFds(t), idle()
	q, peer := quietPair(t)
	q.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := q.Write(make([]byte, 64<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write into a full socket: %v, want a timeout", err)
	}
	if q.out == nil {
		t.Fatal("a write waited, and out was not made")
	}
	done := make(chan error, 1)
	go func() {
		_, err := q.Read(make([]byte, 1))
		done <- err
	}()
	// A read that waits is armed; closing must end it either way.
	if err := q.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read ended by Close: %v, want net.ErrClosed", err)
	}
	if _, err := io.Copy(io.Discard, peer); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer after SetLinger(0) and Close: %v, want a reset", err)
	}
	if err := q.CloseWrite(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("CloseWrite after Close: %v", err)
	}
	peer.Close()
	checkFds(t, before, idleBefore)
}

// checkFds fails t unless the descriptors open now are those open before
// (before of them, with idleBefore idle epoll instances) plus the epoll
// instances kept since for the next tunnels, and only they.
func checkFds(t *testing.T, before, idleBefore int) {
	t.Helper()
	if after := openFds(t); after != before+idle()-idleBefore {
		t.Fatalf("%d descriptors open before, %d after, with %d more epoll instances kept", before, after, idle()-idleBefore)
	}
}

func idle() int {
	idleEpolls.Lock()
	defer idleEpolls.Unlock()
	return len(idleEpolls.free)
}

func openFds(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(fds)
}

// Splice moves a Puller's plain TCP target out of the runtime's poller,
// and no other target.
func TestSpliceQuietsAPullersTarget(t *testing.T) {
	for _, pulled := range []bool{true, false} {
		_, near := tcpPair(t)
		far, _ := tcpPair(t)
		var client Conn = NetConn(near, nil)
		if pulled {
			client = &pullConn{Conn: client}
		} else {
			client = &records{} // neither plain TCP nor a Puller
		}
		target := NetConn(far, nil).(*netConn)
		ended := make(chan error, 1)
		abort := Go(context.Background(), client, target, Options{}, func(_ Stats, err error) { ended <- err })
		_, quieted := target.Conn.(*quietConn)
		abort(errors.New("test over"))
		<-ended
		if quieted != pulled {
			t.Errorf("pulled %v: target moved out of the poller: %v", pulled, quieted)
		}
	}
}

// Closing while a write waits for room ends the write at once, and the
// epoll instances go back for the next connection, which waits through
// them as the first did.
func TestQuietConnReusesEpolls(t *testing.T) {
	q, _ := quietPair(t) // the peer reads nothing
	done := make(chan error, 1)
	go func() {
		_, err := q.Write(make([]byte, 64<<20))
		done <- err
	}()
	for {
		q.mu.Lock()
		out := q.out
		q.mu.Unlock()
		if out != nil {
			break // the write waits
		}
		runtime.Gosched()
	}
	in, out := q.in, q.out
	q.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write ended by Close: %v, want net.ErrClosed", err)
	}

	q2, peer := quietPair(t)
	if q2.in != out && q2.in != in {
		t.Fatal("a new connection did not reuse a closed one's epoll instance")
	}
	if err := wakeWaitingRead(t, q2, newRawReader(q2), peer, "x"); err != nil {
		t.Fatalf("a wait through a reused instance: %v", err)
	}
}

// Close may come at any point of reads, writes and deadline changes on
// other goroutines: each of them ends, promptly, with the socket closed
// once and no descriptor left behind.
func TestQuietConnCloseRaces(t *testing.T) {
	before, idleBefore := openFds(t), idle()
	for i := range 200 {
		q, peer := quietPair(t)
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { // a reader, waiting and reading
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				if _, err := q.Read(buf); err != nil {
					return
				}
			}
		}()
		go func() { // a writer that waits for room: at most pushWait, or until Close
			defer wg.Done()
			p := make([]byte, 256<<10)
			for {
				if i%2 == 0 && q.SetWriteDeadline(time.Now().Add(pushWait)) != nil {
					return
				}
				if _, err := q.Write(p); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		}()
		go func() { // the peer sends a little and never reads
			defer wg.Done()
			for range i % 7 {
				if _, err := peer.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		if i%3 == 0 {
			runtime.Gosched()
		}
		q.SetLinger(0)
		closed := make(chan error, 1)
		go func() { closed <- q.Close() }()
		timeout := time.After(5 * time.Second)
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("round %d: Close: %v", i, err)
			}
		case <-timeout:
			t.Fatalf("round %d: Close hangs", i)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-timeout:
			t.Fatalf("round %d: a read or write outlived Close", i)
		}
		peer.Close()
	}
	checkFds(t, before, idleBefore)
}

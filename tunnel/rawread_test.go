package tunnel

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// Data that arrives between a read that would block and the wait that
// follows it must end the wait: RawConn.Read clears what the poller saw
// before it, so the wait has to look at the socket itself.
func TestWaitReadableSeesDataFromBefore(t *testing.T) {
	pc, peer := tcpPair(t)
	rr := newRawReader(pc)
	if _, err := rr.tryRead(make([]byte, 16)); err != errWouldBlock {
		t.Fatalf("read on an empty socket = %v, want errWouldBlock", err)
	}
	peer.Write([]byte("x"))
	// Let the poller see the data arrive before the wait begins (there is
	// no event to wait for: seeing it is what the runtime does meanwhile).
	time.Sleep(20 * time.Millisecond)
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if err := rr.waitReadable(); err != nil {
		t.Fatalf("wait with data on the socket = %v", err)
	}
}

// A reset that the wait's peek finds is the wait's error: the peek takes
// the socket's error, and the read after it would see a clean end.
func TestWaitReadableReportsReset(t *testing.T) {
	pc, peer := tcpPair(t)
	rr := newRawReader(pc)
	if _, err := rr.tryRead(make([]byte, 16)); err != errWouldBlock {
		t.Fatalf("read on an empty socket = %v, want errWouldBlock", err)
	}
	peer.SetLinger(0)
	peer.Close() // RST
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if err := rr.waitReadable(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("wait after the peer's reset = %v, want ECONNRESET", err)
	}
}

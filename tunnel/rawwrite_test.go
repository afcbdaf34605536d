package tunnel

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
)

// A push into a socket whose peer does not read gives up after pushWait
// and says how much the socket took, its pieces in order; the socket's
// deadline is cleared, so the direction's own write of the rest works as
// usual.
func TestPushWaitsAtMostAMoment(t *testing.T) {
	a, b := tcpPair(t)
	w := testWriter(t, a)
	p := make([]byte, 64<<20) // far beyond both socket buffers
	for i := range p {
		p[i] = byte(i % 251)
	}
	n := w.write([][]byte{p[:7], p[7:100], p[100:]}, true) // b reads nothing yet
	if n <= 100 || n >= len(p) {
		t.Fatalf("push into a full socket wrote %d of %d bytes", n, len(p))
	}
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	if _, err := a.Write(p[n : n+1000]); err != nil {
		t.Fatalf("write after a push that timed out: %v", err)
	}
	a.CloseWrite()
	if all := <-got; !bytes.Equal(all, p[:n+1000]) {
		t.Fatalf("target read %d bytes, want the first %d in order", len(all), n+1000)
	}
}

// A push told not to wait never waits: into a full socket it returns at
// once, where a waiting push would wait pushWait each time.
func TestPushWithoutWait(t *testing.T) {
	a, _ := tcpPair(t) // the peer reads nothing
	w := testWriter(t, a)
	p := make([]byte, 4<<20)
	// Fill the socket (and the peer's) until a push takes nothing: the
	// kernel may make room at first as the buffers grow.
	for i := 0; w.write([][]byte{p}, false) > 0; i++ {
		if i == 1000 {
			t.Fatal("the socket never filled")
		}
	}
	const tries = 100
	start := time.Now()
	for range tries {
		w.write([][]byte{p}, false)
	}
	if took := time.Since(start); took >= tries*pushWait/2 {
		t.Fatalf("%d pushes into a full socket took %v, as if they waited", tries, took)
	}
}

// pushSource is a Conn whose data arrives from elsewhere, as an HTTP/2
// stream's does: arrive pushes it while Read waits with nothing buffered,
// as h2's reader goroutine does, and buffers what push does not take.
type pushSource struct {
	mu      sync.Mutex
	push    func([][]byte, bool) int
	waiting bool
	buf     []byte
	eof     bool
	wake    chan struct{}
	pushed  int
}

func (s *pushSource) SetPush(push func([][]byte, bool) int) {
	s.mu.Lock()
	s.push = push
	s.mu.Unlock()
}

func (s *pushSource) arrive(p []byte, eof bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.push != nil && s.waiting && len(s.buf) == 0 && len(p) > 0 {
		push := s.push
		s.mu.Unlock()
		n := push([][]byte{p}, true)
		s.mu.Lock()
		s.pushed += n
		p = p[n:]
	}
	s.buf = append(s.buf, p...)
	s.eof = eof
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *pushSource) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) == 0 && !s.eof {
		s.waiting = true
		s.mu.Unlock()
		<-s.wake
		s.mu.Lock()
		s.waiting = false
	}
	if len(s.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// waitReading returns once Read waits for data.
func (s *pushSource) waitReading() {
	for {
		s.mu.Lock()
		waiting := s.waiting
		s.mu.Unlock()
		if waiting {
			return
		}
		runtime.Gosched()
	}
}

func (s *pushSource) Write(p []byte) (int, error) { return len(p), nil }
func (s *pushSource) CloseWrite() error           { return nil }
func (s *pushSource) Close() error                { return nil }
func (s *pushSource) Abort(error)                 {}

// Splice gives a Pusher source push when the destination is plain TCP:
// everything that arrives while the direction waits goes through it. What
// was pushed is counted, and push is taken back when the direction ends.
func TestSplicePush(t *testing.T) {
	src := &pushSource{wake: make(chan struct{}, 1)}
	pt, target := tcpPair(t)
	result := make(chan Stats, 1)
	go func() {
		st, _ := Splice(context.Background(), src, NetConn(pt, nil), Options{})
		result <- st
	}()
	var sent []byte
	for i := range 20 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		sent = append(sent, msg...)
		src.waitReading()
		src.arrive(msg, false)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(target, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("target read %q..., %v", got[:min(len(got), 8)], err)
		}
	}
	src.arrive(nil, true)
	if _, err := io.ReadAll(target); err != nil {
		t.Fatal(err)
	}
	target.CloseWrite()
	st := <-result
	src.mu.Lock()
	defer src.mu.Unlock()
	if st.Up != int64(len(sent)) {
		t.Fatalf("Splice counted %d bytes up, want %d", st.Up, len(sent))
	}
	if src.pushed != len(sent) || src.push != nil {
		t.Fatalf("pushed %d of %d bytes; push still set: %v", src.pushed, len(sent), src.push != nil)
	}
}

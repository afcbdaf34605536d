package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Tunnel tests: HTTP/1.1 CONNECT (RFC 9110 §9.3.6) and HTTP/2 CONNECT
// (RFC 9113 §8.5) through the real binary to loopback targets that the
// test drives byte by byte, so each step (data, FIN, RST) is observed at
// the other end before the next one is taken.

// TestH1ConnectHalfCloseClientFirst: the client's FIN (TLS close_notify and
// TCP FIN) reaches the target as EOF, and the target's answer sent after
// that still reaches the client. It also checks that bytes pipelined in
// the same write as the CONNECT are the first the target receives.
func TestH1ConnectHalfCloseClientFirst(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)

	c, resp := h1Connect(t, p, tg.Addr(), []byte("early bytes"))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: status %d", resp.StatusCode)
	}
	srv := tg.Next(t)
	sameBytes(t, "target's first bytes", readFull(t, srv, 11), []byte("early bytes"))

	exchange(t, c, srv)

	c.closeWrite(t)
	expectEOF(t, srv, "target after the client's half-close")
	if _, err := srv.Write([]byte("tail after FIN")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("client: reading the tail: %v (got %q)", err, got)
	}
	sameBytes(t, "client's tail", got, []byte("tail after FIN"))
}

// TestH1ConnectHalfCloseTargetFirst: the target's FIN reaches the client as
// EOF while the client can still send, and its later bytes and FIN reach
// the target.
func TestH1ConnectHalfCloseTargetFirst(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)

	c, resp := h1Connect(t, p, tg.Addr(), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: status %d", resp.StatusCode)
	}
	srv := tg.Next(t)
	exchange(t, c, srv)

	if _, err := srv.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := srv.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("client: want clean EOF after the target's FIN, got %v (read %q)", err, got)
	}
	sameBytes(t, "client's last bytes", got, []byte("bye"))

	if _, err := c.Write([]byte("late from client")); err != nil {
		t.Fatalf("client: write after the target's FIN: %v", err)
	}
	sameBytes(t, "target's late bytes", readFull(t, srv, 16), []byte("late from client"))
	c.closeWrite(t)
	expectEOF(t, srv, "target after the client's FIN")
}

// TestH2ConnectHalfClose: the client's END_STREAM reaches the target as
// EOF; the target's bytes sent after that still reach the client, and the
// target's FIN ends the stream with END_STREAM (a clean EOF).
func TestH2ConnectHalfClose(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)
	cc := dialH2(t, p)

	s := mustH2Connect(t, testContext(t, ioTimeout), cc, tg.Addr())
	srv := tg.Next(t)
	exchange(t, s, srv)

	s.closeWrite()
	expectEOF(t, srv, "target after the client's END_STREAM")
	if _, err := srv.Write([]byte("tail after END_STREAM")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("client: want END_STREAM after the tail, got %v (read %q)", err, got)
	}
	sameBytes(t, "client's tail", got, []byte("tail after END_STREAM"))
}

// exchange sends one message each way through an open tunnel.
func exchange(t testing.TB, client io.ReadWriter, srv net.Conn) {
	t.Helper()
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "target got", readFull(t, srv, 4), []byte("ping"))
	if _, err := srv.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "client got", readFull(t, client, 4), []byte("pong"))
}

// TestH2Connect200StreamsOneConnection runs 200 tunnels at once on a single
// HTTP/2 connection, each carrying 1 MiB each way through an echo target,
// and checks every byte by SHA-256. Tunnels share the connection's flow
// control, so a proxy that lets one stream block the others, or mixes up
// streams, fails here.
func TestH2Connect200StreamsOneConnection(t *testing.T) {
	const (
		streams = 200
		size    = 1 << 20
	)
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, echoConn)
	cc := dialH2(t, p)
	ctx := testContext(t, 60*time.Second)

	start := time.Now()
	errs := make(chan error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoOverH2(t, ctx, cc, tg.Addr(), uint64(i), size)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d streams x %d bytes each way in %v", streams, size, elapsed)
	if n := tg.Accepted(); n != streams {
		t.Errorf("target accepted %d connections, want %d", n, streams)
	}
	// Each tunnel gets one access line with the bytes it carried.
	seen := 0
	p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
		if l["message"] == "access" && l["kind"] == "tunnel" && l["up"] == float64(size) && l["down"] == float64(size) {
			seen++
		}
		return seen == streams
	})
}

// echoOverH2 sends size bytes of payload(seed) through a CONNECT stream to
// an echo target and checks that the same bytes come back, then END_STREAM.
func echoOverH2(t testing.TB, ctx context.Context, cc *http2.ClientConn, authority string, seed uint64, size int64) error {
	s, err := h2Connect(t, ctx, cc, authority)
	if err != nil {
		return fmt.Errorf("stream %d: %w", seed, err)
	}
	if s.resp.StatusCode != 200 {
		return fmt.Errorf("stream %d: CONNECT: %s, Proxy-Status %q", seed, s.resp.Status, s.resp.Header.Get("Proxy-Status"))
	}
	sent := make(chan [32]byte, 1)
	go func() {
		// Hash what is sent while sending it, so the check costs one
		// pass over the data.
		sum, _, err := hashReader(io.TeeReader(payload(seed, size), s.up))
		s.up.CloseWithError(err)
		sent <- sum
	}()
	got, n, err := hashReader(s)
	if err != nil {
		// Unblock the sender if the stream died under it.
		s.up.CloseWithError(err)
	}
	want := <-sent
	switch {
	case err != nil:
		return fmt.Errorf("stream %d: reading the echo after %d bytes: %w", seed, n, err)
	case n != size:
		return fmt.Errorf("stream %d: echo is %d bytes, want %d", seed, n, size)
	case got != want:
		return fmt.Errorf("stream %d: echo SHA-256 differs from what was sent", seed)
	}
	return nil
}

// TestH2ConnectTargetResetIsStreamError: when the target resets its TCP
// connection mid-tunnel, the client must see the stream reset (RST_STREAM),
// never a clean END_STREAM that would pass a truncated transfer off as a
// complete one (RFC 9113 §8.5).
func TestH2ConnectTargetResetIsStreamError(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)
	cc := dialH2(t, p)

	s := mustH2Connect(t, testContext(t, ioTimeout), cc, tg.Addr())
	srv := tg.Next(t)
	exchange(t, s, srv)
	resetConn(t, srv)

	got, err := io.ReadAll(s)
	var se http2.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("client: want a stream error after the target's RST, got %v (read %q)", err, got)
	}
	if se.Code == http2.ErrCodeNo {
		t.Fatalf("client: RST_STREAM code NO_ERROR does not say the tunnel failed: %v", err)
	}
	t.Logf("client saw %v", err)
}

// TestH1ConnectTargetResetResetsClient: the HTTP/1.1 counterpart; a reset
// target must not look like a clean close to the client.
func TestH1ConnectTargetResetResetsClient(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)

	c, resp := h1Connect(t, p, tg.Addr(), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: status %d", resp.StatusCode)
	}
	srv := tg.Next(t)
	exchange(t, c, srv)
	resetConn(t, srv)

	got, err := io.ReadAll(c)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client: want a connection error after the target's RST, got %v (read %q)", err, got)
	}
	t.Logf("client saw %v", err)
}

// resetConn closes c with SO_LINGER 0, which sends a TCP RST.
func resetConn(t testing.TB, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestClientGoneClosesTarget: however the client disappears, the target's
// connection is closed promptly rather than left open.
func TestClientGoneClosesTarget(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)

	t.Run("h2 stream reset", func(t *testing.T) {
		cc := dialH2(t, p)
		s := mustH2Connect(t, testContext(t, ioTimeout), cc, tg.Addr())
		srv := tg.Next(t)
		exchange(t, s, srv)
		// Closing an unfinished response body sends RST_STREAM(CANCEL).
		s.resp.Body.Close()
		expectClosedWithin(t, srv, 2*time.Second)
		// The connection itself must survive a stream reset.
		s2 := mustH2Connect(t, testContext(t, ioTimeout), cc, tg.Addr())
		exchange(t, s2, tg.Next(t))
	})
	t.Run("h2 connection closed", func(t *testing.T) {
		cc := dialH2(t, p)
		s := mustH2Connect(t, testContext(t, ioTimeout), cc, tg.Addr())
		srv := tg.Next(t)
		exchange(t, s, srv)
		cc.Close()
		expectClosedWithin(t, srv, 2*time.Second)
	})
	t.Run("h1 connection reset", func(t *testing.T) {
		c, resp := h1Connect(t, p, tg.Addr(), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: status %d", resp.StatusCode)
		}
		srv := tg.Next(t)
		exchange(t, c, srv)
		// A client that vanishes (crash, network loss) leaves no TLS
		// close_notify: reset the TCP connection under the TLS layer.
		resetConn(t, c.NetConn().(*net.TCPConn))
		expectClosedWithin(t, srv, 2*time.Second)
	})
}

// expectClosedWithin asserts that the peer of c ends or resets the
// connection within d.
func expectClosedWithin(t testing.TB, c net.Conn, d time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("target: connection still open %v after the client went away", d)
	}
	t.Logf("target saw the close after %v (err %v)", time.Since(start).Round(time.Millisecond), err)
}

// TestH2ConnectHalfCloseTargetFirst: the target's FIN becomes END_STREAM
// while the client's direction stays open (RFC 9113 §8.5: a TCP FIN is
// carried as END_STREAM, each direction on its own). Go's HTTP/2 client
// stops sending once the server ends the stream, so this uses raw frames.
func TestH2ConnectHalfCloseTargetFirst(t *testing.T) {
	p := StartProxy(t, "--allow-private")
	tg := startTarget(t, nil)
	r := dialH2Frames(t, p)

	if status := r.connect(t, 1, tg.Addr()); status != "200" {
		t.Fatalf("CONNECT: status %s", status)
	}
	srv := tg.Next(t)
	if _, err := srv.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := srv.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "client's bytes before END_STREAM", r.readStream(t, 1), []byte("bye"))

	r.send(t, 1, []byte("late from client"), false)
	sameBytes(t, "target's late bytes", readFull(t, srv, 16), []byte("late from client"))
	r.send(t, 1, nil, true)
	expectEOF(t, srv, "target after the client's END_STREAM")
}

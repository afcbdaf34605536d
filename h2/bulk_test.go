package h2

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// patternTarget serves size bytes to every connection, then closes: the
// k-th connection's byte i is pattern(k, i), so that a client can tell
// bytes out of place, or from another connection, from its own.
func patternTarget(t testing.TB, size int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; ; k++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.CopyN(c, &patternReader{k: k}, size)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func pattern(k, i int) byte { return byte((i + k) % 251) }

// patternReader reads connection k's bytes.
type patternReader struct{ k, i int }

func (r *patternReader) Read(p []byte) (int, error) {
	for j := range p {
		p[j] = pattern(r.k, r.i+j)
	}
	r.i += len(p)
	return len(p), nil
}

// patternChecker takes one connection's bytes and reports the first one
// out of place; the first byte tells which connection it is (k < 251).
type patternChecker struct {
	k, i int
	bad  error
}

func (w *patternChecker) Write(p []byte) (int, error) {
	for _, b := range p {
		if w.i == 0 {
			w.k = int(b)
		}
		if want := pattern(w.k, w.i); b != want && w.bad == nil {
			w.bad = fmt.Errorf("byte %d of connection %d is %d, want %d", w.i, w.k, b, want)
		}
		w.i++
	}
	return len(p), nil
}

// Sixteen tunnels on one connection, each downloading at full speed
// through x/net's client: flow control, the write scheduler and the
// writes that wait for their turn keep all of them going, each stream's
// bytes arrive whole and in order, and no protection mistakes the
// traffic for an attack.
func TestManyTunnelsOneConnection(t *testing.T) {
	const streams, size = 16, 16 << 20
	addr := patternTarget(t, size)
	ts := startTLSServer(t, Config{Logger: testLogger(t)}, tunnelHandler(addr))
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // loopback test cert
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+ts.addr, pr)
			req.Host = "target.test:443"
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var check patternChecker
			n, err := io.Copy(&check, resp.Body)
			if err != nil || n != size {
				t.Errorf("tunnel downloaded %d bytes: %v", n, err)
			}
			if check.bad != nil {
				t.Error(check.bad)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkTunnelDownload moves 64 MiB per op through one CONNECT tunnel
// over TLS (client and server in this process: for profiling the engine).
func BenchmarkTunnelDownload(b *testing.B) {
	const size = 64 << 20
	addr := patternTarget(b, size)
	ts := startTLSServer(b, Config{}, tunnelHandler(addr))
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // loopback test cert
	defer tr.CloseIdleConnections()
	b.SetBytes(size)
	for range b.N {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodConnect, "https://"+ts.addr, pr)
		req.Host = "target.test:443"
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != size {
			b.Fatalf("%d bytes: %v", n, err)
		}
		resp.Body.Close()
		pw.Close()
	}
}

// TestIdleTunnelFootprint measures what an idle tunnel stream costs the
// engine (stream, request, response writer, handler goroutine blocked in
// Read): heap plus stacks, per stream, with no DATA buffers held.
func TestIdleTunnelFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	const n = 500
	started := make(chan struct{}, n)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			return
		}
		started <- struct{}{}
		var b [1]byte
		_, _ = c.Read(b[:]) // idle until the client ends
		_ = c.Close()
	})
	rc := newRawClient(t, Config{MaxConcurrentStreams: n}, h, false)
	rc.handshake()
	// Count the stream's own memory, not the first-use growth of pools.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := uint32(0); i < n; i++ {
		rc.headers(2*i+1, false, ":method", "CONNECT", ":authority", "target.test:443")
	}
	for i := 0; i < n; i++ {
		<-started
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc+after.StackInuse) - int64(before.HeapAlloc+before.StackInuse)) / n
	t.Logf("idle tunnel stream: %d bytes (heap+stack) in the engine", per)
	if per > 16<<10 {
		t.Errorf("idle tunnel stream costs %d bytes, want <= 16 KiB", per)
	}
	for i := uint32(0); i < n; i++ {
		rc.must(rc.fr.WriteData(2*i+1, true, nil))
	}
}

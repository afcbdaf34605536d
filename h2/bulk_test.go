package h2

import (
	"context"
	"crypto/tls"
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

// zeroTarget serves size zero bytes to every connection, then closes.
func zeroTarget(t testing.TB, size int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.CopyN(c, zeroReader{}, size)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Sixteen tunnels on one connection, each downloading at full speed
// through x/net's client: flow control and the write scheduler keep all of
// them going and no protection mistakes the traffic for an attack.
func TestManyTunnelsOneConnection(t *testing.T) {
	const streams, size = 16, 16 << 20
	addr := zeroTarget(t, size)
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
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n != size {
				t.Errorf("tunnel downloaded %d bytes: %v", n, err)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkTunnelDownload moves 64 MiB per op through one CONNECT tunnel
// over TLS (client and server in this process: for profiling the engine).
func BenchmarkTunnelDownload(b *testing.B) {
	const size = 64 << 20
	addr := zeroTarget(b, size)
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

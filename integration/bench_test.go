package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Benchmarks of the proxy's data path (issue 3). Run them with
//
//	go test -run '^$' -bench . -benchtime 4x ./integration/
//
// Each throughput benchmark moves benchBytes per operation, upload (client
// to target) and download separately, and reports MB/s plus the proxy's
// CPU time per GiB (read from /proc for the proxy process) and that of
// the test process (the client and the target), which shares the
// machine's cores with the proxy. The clients speak TLS end to end with
// the target through the tunnel, as browsers do, so "direct" (no proxy)
// is the ceiling. The h2 paths use benchH2
// (benchclient_test.go), a lean client that returns flow-control window
// in halves as Chrome does; x/net's client, which returns it every 4 KiB,
// cost more CPU than the proxy's h2 side and bounded the h2 figures.

const benchBytes = 64 << 20

// benchTarget serves raw TLS: a connection whose first byte is 'u' is
// drained (upload), 'd' gets benchBytes (download).
func benchTarget(b *testing.B) (addr string, cfg *tls.Config) {
	ca := newTestCA(b)
	cert := ca.issue(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
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
				var op [1]byte
				if _, err := io.ReadFull(c, op[:]); err != nil {
					return
				}
				if op[0] == 'u' {
					n, _ := io.Copy(io.Discard, c)
					fmt.Fprintf(c, "%d", n)
					return
				}
				io.Copy(c, io.LimitReader(zeros{}, benchBytes))
			}()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// dirName names a transfer's direction in a benchmark's name.
func dirName(upload bool) string {
	if upload {
		return "upload"
	}
	return "download"
}

// transfer runs one upload or download over an established path to the
// target and checks the byte count.
func transfer(b *testing.B, raw net.Conn, cfg *tls.Config, upload bool) {
	c := tls.Client(raw, cfg)
	defer c.Close()
	if upload {
		c.Write([]byte{'u'})
		if _, err := io.Copy(c, io.LimitReader(zeros{}, benchBytes)); err != nil {
			b.Fatal(err)
		}
		c.CloseWrite()
		got, _ := io.ReadAll(c)
		if string(got) != strconv.Itoa(benchBytes) {
			b.Fatalf("target got %s bytes", got)
		}
		return
	}
	c.Write([]byte{'d'})
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != benchBytes {
		b.Fatalf("downloaded %d bytes: %v", n, err)
	}
}

// cpuSeconds is the user+system CPU time of process pid.
func cpuSeconds(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// rssBytes is the resident memory of process pid.
func rssBytes(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// path opens a byte stream to the target: directly or through the proxy.
type path func(b *testing.B) net.Conn

func BenchmarkThroughput(b *testing.B) {
	target, cfg := benchTarget(b)
	p := StartProxy(b, "--allow-private", "--plain-listen", "127.0.0.1:0")
	plain := logAddr(b, p, "listening (cleartext)")
	h1TLS := h1TLSPath(p, target)
	paths := []struct {
		name    string
		streams int
		open    path // nil: CONNECT streams over HTTP/2 connections
		conns   int  // how many HTTP/2 connections the streams share (0: one)
	}{
		{"direct-tls", 1, func(b *testing.B) net.Conn {
			c, err := net.Dial("tcp", target)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}, 0},
		{"h1-connect-tls", 1, h1TLS, 0},
		{"h1-connect-plain", 1, func(b *testing.B) net.Conn { return plainConnect(b, plain, target) }, 0},
		// 16 HTTP/1.1 tunnels at once, each on its own TLS connection, as
		// an HTTP/1.1 client opens them: beside 16 HTTP/2 tunnels on one
		// connection, it tells what 16 busy targets cost either way.
		{"h1-connect-tls-16", 16, h1TLS, 0},
		{"h2-connect-1", 1, nil, 0},
		{"h2-connect-16", 16, nil, 0},
		// The same 16 tunnels, each on an HTTP/2 connection of its own:
		// what sharing one connection costs, apart from what the HTTP/2
		// engine costs.
		{"h2-connect-16-apart", 16, nil, 16},
	}
	// The HTTP/1.1-over-TLS tunnel's throughput per direction, for the
	// HTTP/2 paths' x-h1-tls: the throughput targets are ratios to it, and
	// within one run the machine's noise mostly cancels out.
	h1tls := map[string]float64{}
	for _, pt := range paths {
		for _, upload := range []bool{true, false} {
			b.Run(pt.name+"/"+dirName(upload), func(b *testing.B) {
				open := pt.open
				if open == nil {
					hs := make([]*benchH2, max(pt.conns, 1))
					for i := range hs {
						hs[i] = dialBenchH2(b, p) // see benchclient_test.go
					}
					var next atomic.Int64
					open = func(b *testing.B) net.Conn {
						return hs[next.Add(1)%int64(len(hs))].connect(b, target)
					}
				}
				b.SetBytes(int64(benchBytes * pt.streams))
				cpu0 := cpuSeconds(b, p.PID())
				self0 := cpuSeconds(b, os.Getpid())
				b.ResetTimer()
				for range b.N {
					var wg sync.WaitGroup
					for range pt.streams {
						wg.Add(1)
						go func() {
							defer wg.Done()
							transfer(b, open(b), cfg, upload)
						}()
					}
					wg.Wait()
				}
				b.StopTimer()
				gib := float64(b.N*pt.streams*benchBytes) / (1 << 30)
				if pt.name != "direct-tls" {
					b.ReportMetric((cpuSeconds(b, p.PID())-cpu0)/gib, "proxy-cpu-s/GiB")
				}
				rate := float64(b.N*pt.streams*benchBytes) / b.Elapsed().Seconds()
				switch {
				case pt.name == "h1-connect-tls":
					h1tls[dirName(upload)] = rate
				case strings.HasPrefix(pt.name, "h2-") && h1tls[dirName(upload)] > 0:
					b.ReportMetric(rate/h1tls[dirName(upload)], "x-h1-tls")
				}
				b.ReportMetric((cpuSeconds(b, os.Getpid())-self0)/gib, "test-cpu-s/GiB")
			})
		}
	}
}

// bufConn reads through the buffer that read the CONNECT response.
// h1TLSPath opens HTTP/1.1 CONNECT tunnels to target through p's TLS
// listener.
func h1TLSPath(p *Proxy, target string) path {
	return func(b *testing.B) net.Conn {
		c, resp := h1Connect(b, p, target, nil)
		if resp.StatusCode != 200 {
			b.Fatalf("CONNECT %d", resp.StatusCode)
		}
		return bufConn{c.Conn, c.br}
	}
}

type bufConn struct {
	net.Conn
	r io.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// plainConnect opens an HTTP/1.1 CONNECT tunnel on the cleartext
// listener, where the proxy joins two TCP sockets (kernel splice path).
func plainConnect(b *testing.B, plain, target string) net.Conn {
	c, err := net.Dial("tcp", plain)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprint(c, connectRequest(target))
	// The response head is exactly this line and a blank line.
	want := "HTTP/1.1 200 Connection established\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		b.Fatalf("CONNECT on the cleartext listener: %q %v", got, err)
	}
	return c
}

// BenchmarkIdleTunnelMemory opens idle tunnels, 1,000 per operation, and
// reports the proxy's resident memory per tunnel: the growth of its RSS
// over all operations, divided by the tunnels they opened. A first batch
// of 1,000, not counted, warms the proxy up, so the figure is the cost of
// one more idle tunnel on a proxy that already holds some, not one-time
// costs of a fresh process. Over several operations the figure also
// averages out where the garbage collector stood when RSS was read (Go
// lets the heap grow to twice its live size between collections).
//
// Each tunnel carries one byte each way before it goes idle; the -used
// variants carry 64 KiB each way first, as a tunnel that served a page
// and is kept alive does: what its buffers keep after traffic counts too.
// h2-websocket tunnels are RFC 8441 WebSockets to an HTTP/1.1 origin, one
// message echoed on each.
func BenchmarkIdleTunnelMemory(b *testing.B) {
	const n = 1000
	for _, kind := range []string{"h2", "h1-tls", "h2-used", "h1-tls-used", "h2-websocket"} {
		b.Run(kind, func(b *testing.B) {
			size := 1
			if strings.HasSuffix(kind, "-used") {
				size = 64 << 10
			}
			data := make([]byte, size)
			echo := startTarget(b, echoConn)
			p := StartProxy(b, "--allow-private", "--max-concurrent-streams", "2000")
			var origin *wsOrigin
			if kind == "h2-websocket" {
				origin = startWSOrigin(b, wsOriginConfig{proto: "h1", session: 10 * time.Minute})
			}
			batch := func() {
				var conns []io.ReadWriter
				if origin != nil {
					idleWebSockets(b, p, origin, n)
					return
				}
				if strings.HasPrefix(kind, "h2") {
					cc := dialH2(b, p)
					ctx := testContext(b, 5*time.Minute)
					for range n {
						conns = append(conns, mustH2Connect(b, ctx, cc, echo.Addr()))
					}
				} else {
					for range n {
						c, resp := h1Connect(b, p, echo.Addr(), nil)
						if resp.StatusCode != 200 {
							b.Fatalf("CONNECT %d", resp.StatusCode)
						}
						conns = append(conns, c)
					}
				}
				// One round trip on each, so every tunnel has carried data
				// (and touched whatever buffers it uses) before going idle.
				for _, c := range conns {
					go c.Write(data)
					readFull(b, c, size)
				}
			}
			// Descriptors per idle tunnel, in the process that holds the
			// most: the echo target's socket and the pipe pair its splice
			// waits with, and an HTTP/1.1 client's own connection (the
			// proxy holds two or three: the target, its epoll instances).
			perTunnel := 3
			if strings.HasPrefix(kind, "h1") {
				perTunnel = 4
			}
			fdBudget(b, b.N+1, n, perTunnel)
			batch() // warm-up
			before := rssBytes(b, p.PID())
			b.ResetTimer()
			for range b.N {
				batch()
			}
			b.ReportMetric((rssBytes(b, p.PID())-before)/float64(b.N*n), "B/idle-tunnel")
		})
	}
}

// fdBudget fails b at once, saying what to do, when batches of n idle
// tunnels that hold perTunnel descriptors each would run this process or
// the proxy (which inherits its limit) out of them. Past the limit an
// accept fails and the benchmark waits for an echo that does not come:
// at -benchtime 10x, 11,000 HTTP/1.1 tunnels need 44,000.
func fdBudget(b *testing.B, batches, n, perTunnel int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	const spare = 256 // listeners, the client connections, the runtime's
	if need := uint64(batches*n*perTunnel + spare); need > lim.Cur {
		b.Fatalf("%d batches of %d idle tunnels need about %d file descriptors, over this process's limit of %d: use a smaller -benchtime (3x) or raise the limit (ulimit -n)",
			batches, n, need, lim.Cur)
	}
}

// idleWebSockets opens n RFC 8441 WebSockets to origin over one HTTP/2
// connection through p, echoes one message on each and leaves them open.
func idleWebSockets(b *testing.B, p *Proxy, origin *wsOrigin, n int) {
	cc := dialH2(b, p)
	ctx := testContext(b, 5*time.Minute)
	hdr := http.Header{":protocol": {"websocket"}, "Sec-Websocket-Version": {"13"}}
	for range n {
		st, err := wsExtendedConnect(ctx, cc, &url.URL{Scheme: "http", Host: origin.addr, Path: "/idle"}, hdr)
		if err != nil || st.resp.StatusCode != http.StatusOK {
			b.Fatalf("extended CONNECT: %v %v", st, err)
		}
		if err := wsWriteFrame(st.pw, 0x1, []byte("x")); err != nil {
			b.Fatal(err)
		}
		if f, err := wsReadFrame(st.resp.Body); err != nil || string(f.payload) != "x" {
			b.Fatalf("echo: %+v %v", f, err)
		}
	}
}

// BenchmarkNewTunnelLatency measures CONNECT to first echoed byte on an
// open HTTP/2 connection, 100 tunnels per operation, one after the other,
// with the Chrome-like client of the throughput benchmarks (x/net's client
// adds a goroutine hand-off per request and per body write of its own).
// Beside it, direct-p50-µs is the same exchange without the proxy (TCP
// dial to the echo target, one byte there and back): the part of the
// figure that is the loopback's and the target's, not the proxy's; and
// stock-p50-µs the same tunnel through Go's own HTTP/2 server (see
// BenchmarkAgainstStock), a reference for machines of other speeds.
func BenchmarkNewTunnelLatency(b *testing.B) {
	echo := startTarget(b, echoConn)
	p := StartProxy(b, "--allow-private")
	h := dialBenchH2(b, p)
	stock := dialBenchH2(b, startStockProxy(b))
	var lat, direct, ref []time.Duration
	one := []byte("x")
	tunnel := func(h *benchH2) time.Duration {
		t0 := time.Now()
		s := h.connect(b, echo.Addr())
		s.Write(one)
		readFull(b, s, 1)
		took := time.Since(t0)
		s.CloseWrite()
		io.Copy(io.Discard, s)
		return took
	}
	for range b.N * 100 {
		lat = append(lat, tunnel(h))
		ref = append(ref, tunnel(stock))
		t0 := time.Now()
		c, err := net.Dial("tcp", echo.Addr())
		if err != nil {
			b.Fatal(err)
		}
		c.Write(one)
		readFull(b, c, 1)
		direct = append(direct, time.Since(t0))
		c.Close()
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	b.ReportMetric(p50(lat), "p50-µs")
	b.ReportMetric(p50(direct), "direct-p50-µs")
	b.ReportMetric(p50(ref), "stock-p50-µs")
}

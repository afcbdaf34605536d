package integration

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Resource limits: tunnels per client address, idle tunnels, slow request
// heads (slowloris), slow destinations, and oversized request heads.

// TestSecurityTunnelsPerClient: --max-tunnels-per-client caps the open
// tunnels of one client address, over h1 and h2 together (429, RFC 6585
// §4, Proxy-Status connection_limit_reached); other addresses are
// unaffected, and a tunnel that ends frees its place.
func TestSecurityTunnelsPerClient(t *testing.T) {
	target := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--max-tunnels-per-client", "2")
	first, resp := h1Connect(t, p, target.Addr(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first tunnel: %d", resp.StatusCode)
	}
	echoOnce(t, first, "one open")
	second := mustH2Connect(t, testContext(t, ioTimeout), dialH2(t, p), target.Addr())
	echoOnce(t, second, "two open")

	for _, kind := range []string{kindH1Connect, kindH2Connect} {
		resp, _, _ := proxyRequest(t, p, kind, "", target.Addr(), "")
		wantRefusal(t, "a third tunnel over "+kind, resp, http.StatusTooManyRequests, "connection_limit_reached")
	}
	for _, kind := range []string{kindH1Connect, kindH2Connect} {
		resp, _, tun := proxyRequest(t, p, kind, otherClientIP, target.Addr(), "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s from another address: %d %q, want 200", kind, resp.StatusCode, resp.Header.Get("Proxy-Status"))
		}
		echoOnce(t, tun, "another client")
	}

	// Ending the first tunnel frees a place once the proxy has seen it end
	// (it logs every tunnel when it ends).
	first.Close()
	p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
		client, _ := l["client"].(string)
		return l["message"] == "access" && l["kind"] == "tunnel" && l["status"] == 200.0 && strings.HasPrefix(client, "127.0.0.1:")
	})
	if status, ps := connectStatus(t, p, kindH1Connect, target.Addr(), ""); status != http.StatusOK {
		t.Errorf("a tunnel after one of two ended: %d %q, want 200", status, ps)
	}
}

// deadlineConn is what waitClosed needs of a connection.
type deadlineConn interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// waitClosed asserts the peer closes c before deadline, reading and
// discarding whatever comes first.
func waitClosed(t *testing.T, what string, c deadlineConn, deadline time.Time) {
	t.Helper()
	_ = c.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: still open at the deadline", what)
	}
}

// TestSecurityIdleTimeout: --idle-timeout closes a tunnel that carried
// nothing either way for that long, at both ends; traffic in only one
// direction keeps it alive.
func TestSecurityIdleTimeout(t *testing.T) {
	const idle = time.Second
	target := startTarget(t, nil)
	p := StartProxy(t, "--allow-private", "--idle-timeout", idle.String())
	for _, toTarget := range []bool{true, false} {
		name := map[bool]string{true: "client to target", false: "target to client"}[toTarget]
		t.Run(name, func(t *testing.T) {
			c, resp := h1Connect(t, p, target.Addr(), nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			srv := target.Next(t)
			var from io.Writer = c
			var to io.Reader = srv
			if !toTarget {
				from, to = srv, c
			}
			// One byte every quarter of the timeout, for twice the timeout.
			tick := time.NewTicker(idle / 4)
			defer tick.Stop()
			for range 8 {
				<-tick.C
				if _, err := from.Write([]byte{'.'}); err != nil {
					t.Fatalf("after %v of one-way traffic: %v", idle*2, err)
				}
				readFull(t, to, 1)
			}
			quiet := time.Now()
			waitClosed(t, "client side of the idle tunnel", c, quiet.Add(idle+3*time.Second))
			waitClosed(t, "target side of the idle tunnel", srv, quiet.Add(idle+3*time.Second))
			if d := time.Since(quiet); d < idle*9/10 {
				t.Errorf("the tunnel was closed %v after its last traffic, before the idle timeout %v", d, idle)
			}
		})
	}
}

// TestSecuritySlowloris: hundreds of connections that stall in the TLS
// handshake or trickle a request head a byte at a time must not starve
// anyone: a normal client is served at once throughout, and with
// --header-timeout 2s every slow connection is closed soon after.
func TestSecuritySlowloris(t *testing.T) {
	const headerTimeout = 2 * time.Second
	target := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--header-timeout", headerTimeout.String())
	rss := watchRSS(t, p)
	const stalled, trickling = 100, 200
	start := time.Now()
	var slow []deadlineConn
	for i := range stalled {
		c, err := net.DialTimeout("tcp", p.Addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 0 {
			// Half of them start a TLS record (RFC 8446 §5.1) that never ends.
			_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		}
		slow = append(slow, c)
	}
	var trickle []*h1Conn
	for range trickling {
		c := dialH1From(t, p, "")
		_ = c.SetDeadline(time.Time{})
		trickle = append(trickle, c)
		slow = append(slow, c)
	}
	t.Logf("slowloris: %d stalled handshakes and %d TLS connections set up in %v", stalled, trickling, time.Since(start))

	// One goroutine trickles a byte of a never-ending head to each.
	head := "GET http://" + target.Addr() + "/ HTTP/1.1\r\nHost: " + target.Addr() + "\r\nX-Slow: " + strings.Repeat("a", 4096)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, c := range trickle {
				_ = c.Conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_, _ = c.Conn.Write([]byte{head[i%len(head)]})
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	for i := range 3 {
		begin := time.Now()
		c, resp := h1Connect(t, p, target.Addr(), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("normal client %d: %d", i, resp.StatusCode)
		}
		echoOnce(t, c, "served despite the slowloris")
		c.Close()
		if d := time.Since(begin); d > time.Second {
			t.Errorf("normal client %d took %v during the slowloris", i, d)
		} else {
			t.Logf("normal client %d served in %v", i, d)
		}
	}

	deadline := time.Now().Add(headerTimeout + 5*time.Second)
	for i, c := range slow {
		waitClosed(t, "slow connection "+strconv.Itoa(i), c, deadline)
	}
	t.Logf("slowloris: all %d slow connections closed %v after the first was opened", len(slow), time.Since(start))
	rss.check(t, "slowloris", 64)
}

// blackhole returns a loopback address whose accept queue is full, so
// that connecting to it hangs: SYNs to a listener with a full queue are
// dropped and retried (a loopback stand-in for an unreachable host).
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := hostPort("127.0.0.1", sa.(*syscall.SockaddrInet4).Port)
	for range 10 { // fill the queue until a connect hangs
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s: connections never started to hang", addr)
	return ""
}

// TestSecurityDialTimeout: a destination that never answers costs a
// request no more than --dial-timeout, then 504 with Proxy-Status
// connection_timeout (RFC 9209 §2.3.9).
func TestSecurityDialTimeout(t *testing.T) {
	addr := blackhole(t)
	p := StartProxy(t, "--allow-private", "--dial-timeout", "1s")
	for _, kind := range proxyKinds {
		start := time.Now()
		resp, _, _ := proxyRequest(t, p, kind, "", addr, "")
		d := time.Since(start)
		wantRefusal(t, kind+" to a black hole", resp, http.StatusGatewayTimeout, "connection_timeout")
		if d < 900*time.Millisecond || d > 5*time.Second {
			t.Errorf("%s to a black hole answered after %v, want about the 1s dial timeout", kind, d)
		}
	}
}

// TestSecurityMaxHeaderBytes: a request head over --max-header-bytes is
// refused (431, RFC 6585 §5) on h1 and h2, and nothing is forwarded or
// dialled; a head under it passes.
func TestSecurityMaxHeaderBytes(t *testing.T) {
	origin := startRecordingOrigin(t)
	target := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--max-header-bytes", "4096")
	big, small := strings.Repeat("b", 32<<10), strings.Repeat("s", 1000)

	h1 := func(method, reqTarget, value string) int {
		raw := method + " " + reqTarget + " HTTP/1.1\r\nHost: " + origin.Addr + "\r\nX-Filler: " + value + "\r\n\r\n"
		resp, _ := h1RoundTrip(t, p, "", raw, method)
		return resp.StatusCode
	}
	if got := h1("GET", "http://"+origin.Addr+"/", small); got != http.StatusOK {
		t.Errorf("h1 forward with a 1 KB field: %d, want 200", got)
	}
	if got := h1("GET", "http://"+origin.Addr+"/", big); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("h1 forward with a 32 KiB field: %d, want 431", got)
	}
	if got := h1("CONNECT", target.Addr(), big); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("h1 CONNECT with a 32 KiB field: %d, want 431", got)
	}

	r := dialRawH2(t, p)
	// The limit is announced (RFC 9113 §6.5.2), so clients learn it.
	if got, ok := r.settings[http2.SettingMaxHeaderListSize]; !ok || got > 8192 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE = %d (sent: %v), want about 4096", got, ok)
	}
	if o := r.answer(t, 1, getFields(origin.Addr, "/", "x-filler", small)...); o.status[1] != "200" {
		t.Errorf("h2 forward with a 1 KB field: %v, want 200", o)
	}
	o := r.answer(t, 3, getFields(origin.Addr, "/", "x-filler", big)...)
	if o.status[3] != "431" && o.rst[3] == 0 && !o.goAway && !o.closed {
		t.Errorf("h2 forward with a 32 KiB field: %v, want 431 or a reset", o)
	}
	t.Logf("h2 forward with a 32 KiB field: %v", o)
	origin.wantSeen(t, "max header bytes", 2)
	if n := target.Accepted(); n != 0 {
		t.Errorf("the CONNECT with an oversized head was dialled (%d connections)", n)
	}
}

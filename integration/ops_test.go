package integration

import (
	"bufio"
	"crypto/tls"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/net/http2"
)

// Tests for running h2proxy in production (issue 6): the cleartext
// listener, PROXY protocol, the admin endpoints, graceful drain, the
// config file and live reloads, and the release build.

// logAddr waits for the log line with message msg and returns its addr.
func logAddr(t testing.TB, p *Proxy, msg string) string {
	t.Helper()
	l := p.WaitLog(t, 10*time.Second, func(l map[string]any) bool { return l["message"] == msg })
	return l["addr"].(string)
}

// adminGet fetches path from the admin listener.
func adminGet(t testing.TB, admin, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: ioTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricValue extracts one sample from a Prometheus text exposition.
func metricValue(t testing.TB, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v
}

// echoThrough checks that a tunnel carries a round trip.
func echoThrough(t testing.TB, rw io.ReadWriter, msg string) {
	t.Helper()
	if _, err := rw.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	sameBytes(t, "echo", readFull(t, rw, len(msg)), []byte(msg))
}

func TestPlainListenerConnect(t *testing.T) {
	echo := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--plain-listen", "127.0.0.1:0")
	plain := logAddr(t, p, "listening (cleartext)")

	c, err := net.DialTimeout("tcp", plain, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	fmt.Fprint(c, connectRequest(echo.Addr()))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT on the cleartext listener: %v %v", resp, err)
	}
	echoThrough(t, struct {
		io.Reader
		io.Writer
	}{br, c}, "plain tunnel")
}

// TestPlainListenerH2C: the cleartext listener speaks HTTP/2 with prior
// knowledge (RFC 9113 §3.3) too, CONNECT tunnels included.
func TestPlainListenerH2C(t *testing.T) {
	echo := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--plain-listen", "127.0.0.1:0")
	plain := logAddr(t, p, "listening (cleartext)")
	c, err := net.DialTimeout("tcp", plain, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	tun := mustH2Connect(t, testContext(t, ioTimeout), cc, echo.Addr())
	echoThrough(t, tun, "h2c tunnel")
	tun.closeWrite() // END_STREAM; the echo target answers with FIN
	expectEOF(t, tun, "h2c tunnel")
	p.WaitLog(t, 5*time.Second, func(l map[string]any) bool {
		return l["message"] == "access" && l["kind"] == "tunnel" && l["proto"] == "HTTP/2.0" && l["target"] == echo.Addr()
	})
}

func TestProxyProtocol(t *testing.T) {
	realClient := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}
	for _, version := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d trusted", version), func(t *testing.T) {
			p := StartProxy(t, "--proxy-protocol", "--trusted-proxies", "127.0.0.0/8")
			c := dialWithProxyHeader(t, p.Addr, version, realClient)
			tc := tls.Client(c, p.TLSConfig("http/1.1"))
			defer tc.Close()
			tc.SetDeadline(time.Now().Add(ioTimeout))
			fmt.Fprint(tc, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("request over PROXY v%d: %v %v", version, resp, err)
			}
			// The logged (and policy-checked) client is the one in the header.
			p.WaitLog(t, 5*time.Second, func(l map[string]any) bool {
				return l["message"] == "access" && strings.HasPrefix(fmt.Sprint(l["client"]), "203.0.113.7:")
			})
		})
	}
	t.Run("untrusted source", func(t *testing.T) {
		p := StartProxy(t, "--proxy-protocol", "--trusted-proxies", "10.0.0.0/8")
		c := dialWithProxyHeader(t, p.Addr, 2, realClient)
		expectClosedByProxy(t, c)
	})
	t.Run("trusted source without header", func(t *testing.T) {
		p := StartProxy(t, "--proxy-protocol", "--trusted-proxies", "127.0.0.1/32")
		c, err := net.DialTimeout("tcp", p.Addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tc := tls.Client(c, p.TLSConfig("http/1.1"))
		tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err == nil {
			t.Fatal("TLS handshake without a PROXY header succeeded")
		}
	})
}

// dialWithProxyHeader connects to addr and sends a PROXY header claiming
// that the connection comes from src.
func dialWithProxyHeader(t testing.TB, addr string, version byte, src *net.TCPAddr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hdr := proxyproto.HeaderProxyFromAddrs(version, src, c.RemoteAddr())
	if _, err := hdr.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	return c
}

// expectClosedByProxy asserts that the proxy closes c without a word.
func expectClosedByProxy(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection that should be closed", n)
	} else if os.IsTimeout(err) {
		t.Fatal("connection from an untrusted source left open")
	}
}

func TestAdminHealthAndMetrics(t *testing.T) {
	echo := startTarget(t, echoConn)
	p := StartProxy(t, "--allow-private", "--admin-listen", "127.0.0.1:0")
	admin := logAddr(t, p, "admin listening")
	if code, _ := adminGet(t, admin, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := adminGet(t, admin, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}
	_, before := adminGet(t, admin, "/metrics")

	c, resp := h1Connect(t, p, echo.Addr(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	echoThrough(t, c, "count me")
	c.Close()
	p.WaitLog(t, 5*time.Second, func(l map[string]any) bool { return l["message"] == "access" && l["kind"] == "tunnel" })
	h1Refused(t, p, connectRequest("127.0.0.1:25"), http.MethodConnect)

	_, after := adminGet(t, admin, "/metrics")
	for _, series := range []string{
		`h2proxy_tunnels_total{outcome="ok"}`,
		`h2proxy_bytes_total{direction="up"}`,
		`h2proxy_bytes_total{direction="down"}`,
		`h2proxy_denials_total{reason="http_request_denied"}`,
		`h2proxy_request_duration_seconds_count{kind="tunnel"}`,
	} {
		if metricValue(t, after, series) <= metricValue(t, before, series) {
			t.Errorf("%s did not rise: %v -> %v", series, metricValue(t, before, series), metricValue(t, after, series))
		}
	}
	expiry := regexp.MustCompile(`(?m)^h2proxy_cert_expiry_timestamp_seconds\{name="localhost"\} (\S+)$`).FindStringSubmatch(after)
	if expiry == nil {
		t.Fatalf("no cert expiry gauge for localhost in:\n%s", after)
	}
	if v, _ := strconv.ParseFloat(expiry[1], 64); v < float64(time.Now().Unix()) {
		t.Errorf("cert expiry %v is in the past", v)
	}
}

func TestGracefulDrain(t *testing.T) {
	echo := startTarget(t, echoConn)
	const drain = 3 * time.Second
	p := StartProxy(t, "--allow-private", "--admin-listen", "127.0.0.1:0", "--drain-timeout", drain.String())
	admin := logAddr(t, p, "admin listening")

	h1c, resp := h1Connect(t, p, echo.Addr(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("h1 CONNECT: %d", resp.StatusCode)
	}
	ctx := testContext(t, 30*time.Second)
	h2t := mustH2Connect(t, ctx, dialH2(t, p), echo.Addr())
	echoThrough(t, h1c, "before")
	echoThrough(t, h2t, "before")

	start := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.WaitLog(t, 5*time.Second, func(l map[string]any) bool { return l["message"] == "draining" })
	if code, _ := adminGet(t, admin, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining = %d, want 503", code)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		c.Close()
		t.Error("new connection accepted while draining")
	}
	// Open tunnels keep flowing during the drain...
	echoThrough(t, h1c, "during drain")
	echoThrough(t, h2t, "during drain")

	// ...until the deadline, and then the process exits cleanly.
	code, err := p.Wait(drain + 10*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("exit code %d, %v; want 0", code, err)
	}
	if took := time.Since(start); took < drain-500*time.Millisecond {
		t.Errorf("exited after %v, before the %v drain deadline", took, drain)
	}
	h1c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadAll(h1c); err != nil && !isClosedOrReset(err) {
		t.Errorf("h1 tunnel after exit: %v", err)
	}
}

func isClosedOrReset(err error) bool {
	return err == io.EOF || strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "closed")
}

func TestConfigFile(t *testing.T) {
	echo := startTarget(t, echoConn)
	cfg := writeTempFile(t, "h2proxy.yaml", []byte("allow-private: true\nallow-ports: [80, 443]\nlog-level: debug\n"))

	// The file's allow-ports refuses the echo target's port...
	p := StartProxy(t, "--config", cfg)
	wantRefusal(t, "port not in the file's allow-ports", refusedConnect(t, p, echo.Addr()), http.StatusForbidden, "http_request_denied")

	// ...and a flag on the command line wins over the file.
	p2 := StartProxy(t, "--config", cfg, "--allow-ports", "1025-65535")
	_, resp := h1Connect(t, p2, echo.Addr(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("flag did not override the file: CONNECT %d", resp.StatusCode)
	}

	// An unknown key stops the start with a message naming it.
	bad := writeTempFile(t, "bad.yaml", []byte("listen: 127.0.0.1:0\nallow-privat: true\n"))
	out, err := exec.Command(binPath, "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown key "allow-privat"`) {
		t.Fatalf("unknown key: err %v, output %s", err, out)
	}
}

// getWithHost sends GET / for host to the proxy over HTTP/1.1 (TLS for
// 127.0.0.1, Host naming the route) and returns the body.
func getWithHost(t testing.TB, p *Proxy, host string) string {
	t.Helper()
	c := dialH1(t, p)
	_, port, _ := net.SplitHostPort(p.Addr)
	c.send(t, []byte("GET / HTTP/1.1\r\nHost: "+host+":"+port+"\r\nConnection: close\r\n\r\n"))
	resp := c.response(t, http.MethodGet)
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// refusedConnect sends CONNECT authority on a new h1 connection and returns
// the refusal.
func refusedConnect(t testing.TB, p *Proxy, authority string) *http.Response {
	t.Helper()
	return h1Refused(t, p, connectRequest(authority), http.MethodConnect)
}

func TestReloadOnSIGHUP(t *testing.T) {
	echo := startTarget(t, echoConn)
	path := filepath.Join(t.TempDir(), "h2proxy.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("allow-private: true\n")
	p := StartProxy(t, "--config", path)
	if _, resp := h1Connect(t, p, echo.Addr(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("before reload: %d", resp.StatusCode)
	}

	write("allow-private: false\n")
	p.Signal(syscall.SIGHUP)
	p.WaitLog(t, 5*time.Second, func(l map[string]any) bool { return l["message"] == "configuration reloaded" })
	wantRefusal(t, "after reload", refusedConnect(t, p, echo.Addr()), http.StatusForbidden, "destination_ip_prohibited")

	// Routes change live too: a route added to the file serves its host
	// after the reload.
	backend := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "from the backend")
	}), nil)
	routeHost := "reload.localhost"
	if got := getWithHost(t, p, routeHost); strings.Contains(got, "from the backend") {
		t.Fatalf("before the route exists: %q", got)
	}
	write("allow-private: false\nroute: [" + routeHost + "=http://" + backend + "]\n")
	p.Signal(syscall.SIGHUP)
	p.WaitLog(t, 5*time.Second, func(l map[string]any) bool {
		return l["message"] == "configuration reloaded" && strings.Contains(fmt.Sprint(l["changed"]), "route")
	})
	if got := getWithHost(t, p, routeHost); got != "from the backend" {
		t.Fatalf("after the route was added: %q", got)
	}
	// The local CA's certificate now covers the new route host too.
	conf := p.TLSConfig("http/1.1")
	conf.ServerName = routeHost
	c, err := tls.Dial("tcp", p.Addr, conf)
	if err != nil {
		t.Fatalf("TLS to the new route host: %v", err)
	}
	c.Close()

	// An invalid file is refused and the running configuration stays.
	write("allow-private: true\nno-such-key: 1\n")
	p.Signal(syscall.SIGHUP)
	p.WaitLog(t, 5*time.Second, func(l map[string]any) bool { return l["message"] == "reload failed; the running configuration stays" })
	wantRefusal(t, "after a failed reload", refusedConnect(t, p, echo.Addr()), http.StatusForbidden, "destination_ip_prohibited")
}

// TestReleaseBuild runs the build script the Dockerfile uses and checks
// that it makes a static binary that runs.
func TestReleaseBuild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "h2proxy")
	if out, err := exec.Command("../deploy/build.sh", bin).CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Fatal("release binary is dynamically linked (has an ELF interpreter)")
		}
	}
	out, err := exec.Command(bin, "ca", "--data-dir", t.TempDir()).Output()
	if err != nil || !strings.Contains(string(out), "BEGIN CERTIFICATE") {
		t.Fatalf("h2proxy ca: %v\n%s", err, out)
	}
}

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestChromium drives headless Chromium through the proxy the way a user
// does (--proxy-server=https://…, DESIGN.md "Chrome as a client"): Chrome
// speaks h2 to the proxy, sends http:// URLs as h2 GETs with :scheme http,
// and uses CONNECT for https://, ws:// and wss://.
func TestChromium(t *testing.T) {
	requireChromium(t)
	ca := newTestCA(t)
	origins := startChromiumOrigins(t, ca)
	p := StartProxy(t, "--allow-private")

	proxyCA := chromiumProxyCA(t, p)
	proxyHash := chromiumSPKIHash(proxyCA)
	listening := p.WaitLog(t, time.Second, func(l map[string]any) bool { return l["message"] == "listening" })
	if hint, _ := listening["chrome"].(string); !strings.Contains(hint, "--ignore-certificate-errors-spki-list="+proxyHash) {
		t.Errorf("listening line's chrome hint %q does not carry the CA's SPKI hash %s", hint, proxyHash)
	}
	_, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		t.Fatalf("proxy address %q: %v", p.Addr, err)
	}

	// Budget: 40 s for the browser session, 5 s to close it, 8 s for the
	// access lines, so the test ends within a minute even when stuck.
	browserCtx, closeBrowser := startChromium(t, 40*time.Second,
		chromedp.Flag("proxy-server", "https://127.0.0.1:"+port),
		// Without this Chrome connects to loopback targets directly.
		chromedp.Flag("proxy-bypass-list", "<-loopback>"),
		chromedp.Flag("ignore-certificate-errors-spki-list", proxyHash+","+chromiumSPKIHash(ca.cert)),
	)

	step := func(t *testing.T) context.Context {
		sctx, scancel := context.WithTimeout(browserCtx, 20*time.Second)
		t.Cleanup(scancel)
		return sctx
	}
	navigate := func(t *testing.T, ctx context.Context, url string) {
		t.Helper()
		resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
		if err != nil {
			t.Fatalf("navigating to %s: %v", url, err)
		}
		if resp == nil {
			t.Fatalf("navigating to %s: no response", url)
		}
		if resp.Status != 200 {
			t.Fatalf("navigating to %s: status %d %s", url, resp.Status, resp.StatusText)
		}
		// A proxied response names the proxy as its remote end.
		if resp.RemotePort != 0 && fmt.Sprint(resp.RemotePort) != port {
			t.Errorf("navigating to %s: response came from %s:%d, not from the proxy %s", url, resp.RemoteIPAddress, resp.RemotePort, p.Addr)
		}
		t.Logf("%s: status %d, protocol %q, remote %s:%d", url, resp.Status, resp.Protocol, resp.RemoteIPAddress, resp.RemotePort)
	}
	text := func(t *testing.T, ctx context.Context, sel, want string) {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", sel, got, want)
		}
	}
	wsEcho := func(t *testing.T, ctx context.Context, o *chromiumOrigin) {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.result`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("waiting for the WebSocket echo: %v", err)
		}
		if want := "echo: hello over websocket"; got != want {
			t.Fatalf("WebSocket result = %q, want %q", got, want)
		}
		if n := o.echoed.Load(); n < 1 {
			t.Errorf("echo server at %s echoed %d messages, want at least 1", o.host, n)
		}
	}

	// bodies fetches a 4 MiB response and posts a 3 MiB request body from
	// the current page and checks both end to end: enough to need HTTP/2
	// flow control on both sides of the proxy, with Chrome's windows.
	bodies := func(t *testing.T, ctx context.Context, scheme string) {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(async () => {
  const big = await (await fetch("/big")).text();
  const okBig = big === %q.repeat(%d);
  const sum = await (await fetch("/sum", {method: "POST", body: "x".repeat(3 << 20)})).text();
  return location.protocol + " big " + big.length + " " + okBig + "; sum " + sum;
})()`, chromiumBigChunk, chromiumBigRepeat), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("fetching the bodies: %v", err)
		}
		sum := sha256.Sum256(bytes.Repeat([]byte("x"), 3<<20))
		want := fmt.Sprintf("%s: big %d true; sum %d %x", scheme, len(chromiumBigChunk)*chromiumBigRepeat, 3<<20, sum)
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}

	t.Run("http", func(t *testing.T) {
		ctx := step(t)
		navigate(t, ctx, "http://"+origins.httpPage.host+"/")
		text(t, ctx, "#msg", "hello over http")
		// The forwarder adds Via (RFC 9110 §7.6.3); its presence at the
		// origin shows the request went through h2proxy.
		if via := origins.httpPage.via.Load().(string); !strings.Contains(via, "h2proxy") {
			t.Errorf("origin saw Via %q, want it to name h2proxy", via)
		}
	})
	t.Run("http bodies", func(t *testing.T) {
		// Still on the http:// page: through the h2 forwarder.
		bodies(t, step(t), "http")
	})
	t.Run("https", func(t *testing.T) {
		ctx := step(t)
		navigate(t, ctx, "https://"+origins.httpsPage.host+"/")
		text(t, ctx, "#msg", "hello over https")
		t.Logf("origin saw the page request over %s", origins.httpsPage.proto.Load())
	})
	t.Run("https bodies", func(t *testing.T) {
		// Still on the https:// page: through the CONNECT tunnel.
		bodies(t, step(t), "https")
	})
	t.Run("ws", func(t *testing.T) {
		ctx := step(t)
		navigate(t, ctx, "http://"+origins.httpPage.host+"/ws")
		wsEcho(t, ctx, origins.wsEcho)
	})
	t.Run("wss", func(t *testing.T) {
		ctx := step(t)
		navigate(t, ctx, "https://"+origins.httpsPage.host+"/ws")
		wsEcho(t, ctx, origins.wssEcho)
	})

	// Tunnels log their access line when they end; closing the browser
	// ends them all. Chrome's own background requests (Google hosts) go
	// to the proxy too and fail there; nothing below looks at them.
	closeBrowser()

	t.Run("access log", func(t *testing.T) {
		want := []struct {
			name, kind, method, target string
		}{
			{"http page", "forward", "GET", origins.httpPage.host},
			{"https page", "tunnel", "CONNECT", origins.httpsPage.host},
			{"ws echo", "tunnel", "CONNECT", origins.wsEcho.host},
			{"wss echo", "tunnel", "CONNECT", origins.wssEcho.host},
		}
		deadline := time.Now().Add(8 * time.Second)
		for _, w := range want {
			// Chrome speaks h2 to the proxy, so every one of these is an
			// HTTP/2 request; WaitLog fails with the whole log if the
			// line never comes (for example when Chrome went direct).
			line := p.WaitLog(t, max(time.Until(deadline), 100*time.Millisecond), func(l map[string]any) bool {
				return l["message"] == "access" && l["kind"] == w.kind && l["target"] == w.target &&
					l["method"] == w.method && l["proto"] == "HTTP/2.0" && l["status"] == float64(200)
			})
			t.Logf("%s: %v %v %v %v %v", w.name, line["kind"], line["method"], line["target"], line["proto"], line["status"])
		}
	})
}

// chromiumProxyCA reads the proxy's local CA certificate.
func chromiumProxyCA(t testing.TB, p *Proxy) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(p.CAPEM)
	if block == nil {
		t.Fatalf("no PEM block in %s/ca.pem", p.DataDir)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parsing the proxy CA: %v", err)
	}
	return cert
}

// chromiumOutput keeps the first 64 KiB of the browser's stdout and stderr
// for the failure report; the allocator writes to it from its own goroutine.
type chromiumOutput struct {
	mu  sync.Mutex
	buf []byte
}

func (o *chromiumOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := 64<<10 - len(o.buf); room > 0 {
		o.buf = append(o.buf, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

func (o *chromiumOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf)
}

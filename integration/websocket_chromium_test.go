package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// wsChromiumPage is the gateway backend's page. It fetches first, so that
// Chrome holds an h2 connection to the origin (h2proxy), and only then
// opens the WebSocket: Chrome uses RFC 8441 only over an h2 connection it
// already has (DESIGN.md, "Chrome as a client").
const wsChromiumPage = `<!doctype html><html><head><title>h2proxy gateway</title></head><body>
<script>
window.result = (async () => {
  const fetched = await (await fetch("/hello")).text();
  const echoed = await new Promise((resolve, reject) => {
    const ws = new WebSocket("wss://" + location.host + "/ws");
    ws.onopen = () => ws.send("hello over rfc8441");
    ws.onmessage = (e) => { resolve(e.data); ws.close(1000, "done"); };
    ws.onerror = () => reject(new Error("WebSocket error"));
    ws.onclose = (e) => reject(new Error("WebSocket closed early: " + e.code));
  });
  return fetched + " | " + echoed;
})();
</script></body></html>`

// TestWebSocketChromiumGateway: headless Chromium browses to a route of
// the proxy (gateway mode, https://app.localhost:PORT/), the page opens
// wss:// to the same host, and the echo comes back. The proxy's access log
// must show that the WebSocket arrived as an RFC 8441 extended CONNECT over
// HTTP/2 and left as an HTTP/1.1 Upgrade to the backend.
func TestWebSocketChromiumGateway(t *testing.T) {
	requireChromium(t)
	backend := startWSOrigin(t, wsOriginConfig{proto: "h1", plain: func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, wsChromiumPage)
		case "/hello":
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, "fetched")
		default:
			http.NotFound(w, r)
		}
	}})
	p := StartProxy(t, "--route", wsRouteHost+"=http://"+backend.addr)
	wsLogOnFailure(t, p, backend.addr)

	// The proxy names the flag that makes Chrome trust its CA in its
	// "listening" line.
	listening := p.WaitLog(t, time.Second, func(l map[string]any) bool { return l["message"] == "listening" })
	hint, _ := listening["chrome"].(string)
	_, spki, ok := strings.Cut(hint, "--ignore-certificate-errors-spki-list=")
	spki, _, _ = strings.Cut(spki, " ")
	if !ok || spki == "" {
		t.Fatalf("listening line's chrome hint %q names no SPKI hash", hint)
	}
	if want := chromiumSPKIHash(chromiumProxyCA(t, p)); spki != want {
		t.Errorf("chrome hint's SPKI hash %s, want the CA's %s", spki, want)
	}

	// Budget: 35 s for the browser session, 5 s to close it.
	browserCtx, closeBrowser := startChromium(t, 35*time.Second,
		// No proxy here: Chrome talks to h2proxy as the origin. Every
		// other name fails without a lookup, so that its background
		// requests stay off the network; app.localhost resolves to
		// loopback as any *.localhost does.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE "+wsRouteHost),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki),
	)

	sctx, scancel := context.WithTimeout(browserCtx, 20*time.Second)
	defer scancel()
	url := wsRouteURL(t, p, "https", "/")
	resp, err := chromedp.Run(sctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("navigating to %s: %v", url, err)
	}
	if resp == nil || resp.Status != 200 {
		t.Fatalf("navigating to %s: response %+v", url, resp)
	}
	if resp.Protocol != "h2" {
		t.Errorf("page came over %q, want h2", resp.Protocol)
	}
	got, err := chromedp.Run(sctx, chromedp.Evaluate[string](`window.result`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("waiting for the page's WebSocket echo: %v", err)
	}
	if want := "fetched | hello over rfc8441"; got != want {
		t.Fatalf("page result %q, want %q", got, want)
	}
	// The page closes the WebSocket after the echo; closing the browser
	// ends anything left, and the tunnel's access line follows.
	closeBrowser()

	line := p.WaitLog(t, 8*time.Second, func(l map[string]any) bool {
		target, _ := l["target"].(string)
		return l["message"] == "access" && l["kind"] == "websocket" && strings.HasSuffix(target, backend.addr+"/ws")
	})
	t.Logf("websocket access line: %v", line)
	for k, want := range map[string]any{"proto": "HTTP/2.0", "method": "CONNECT", "origin_proto": "h1", "status": float64(200)} {
		if line[k] != want {
			t.Errorf("access line %s = %v, want %v (extended CONNECT in, HTTP/1.1 Upgrade out)", k, line[k], want)
		}
	}
	if hs := backend.lastHandshake(t); hs.method != http.MethodGet || hs.proto != "HTTP/1.1" || hs.uri != "/ws" {
		t.Errorf("backend saw %s %s %s, want GET /ws HTTP/1.1", hs.method, hs.uri, hs.proto)
	}
	if n := backend.echoed.Load(); n < 1 {
		t.Errorf("backend echoed %d messages, want at least 1", n)
	}
}

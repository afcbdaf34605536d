package integration

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// This file holds the loopback origins the Chromium test browses to through
// the proxy: page servers for http:// and https://, and WebSocket echo
// servers for ws:// and wss://. Names carry a "chromium" prefix so they
// cannot clash with helpers of other test files in the package.

// chromiumSPKIHash is the value Chrome's --ignore-certificate-errors-spki-list
// expects: base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo.
func chromiumSPKIHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// chromiumOrigin is one loopback origin server.
type chromiumOrigin struct {
	srv  *httptest.Server
	host string // 127.0.0.1:PORT
	// via holds the Via field of the last page request, which shows that
	// the request went through h2proxy's forwarder.
	via atomic.Value
	// proto holds the protocol of the last page request.
	proto atomic.Value
	// echoed counts the WebSocket messages echoed back.
	echoed atomic.Int64
}

// chromiumOrigins starts the four origins. Their handlers stop when the
// test ends: cleanup cancels every WebSocket and waits for its handler, then
// closes the servers.
type chromiumOrigins struct {
	httpPage, httpsPage, wsEcho, wssEcho *chromiumOrigin
}

func startChromiumOrigins(t testing.TB, ca *testCA) *chromiumOrigins {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var handlers sync.WaitGroup
	quiet := log.New(io.Discard, "", 0) // TLS handshake noise from Chrome's retries

	start := func(h func(o *chromiumOrigin) http.Handler, tlsOn, h2 bool) *chromiumOrigin {
		o := &chromiumOrigin{}
		o.via.Store("")
		o.proto.Store("")
		o.srv = httptest.NewUnstartedServer(h(o))
		o.srv.Config.ErrorLog = quiet
		if tlsOn {
			o.srv.EnableHTTP2 = h2
			o.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t)}}
			o.srv.StartTLS()
		} else {
			o.srv.Start()
		}
		o.host = o.srv.Listener.Addr().String()
		return o
	}

	// echo answers each WebSocket message with "echo: " + message. The
	// pages come from other origins (other ports), so allow loopback
	// origins explicitly.
	echo := func(o *chromiumOrigin) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handlers.Add(1)
			defer handlers.Done()
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
				OriginPatterns: []string{"127.0.0.1:*", "localhost:*"},
			})
			if err != nil {
				return
			}
			defer c.CloseNow()
			hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
			defer hcancel()
			for {
				typ, msg, err := c.Read(hctx)
				if err != nil {
					return
				}
				if err := c.Write(hctx, typ, append([]byte("echo: "), msg...)); err != nil {
					return
				}
				o.echoed.Add(1)
			}
		})
	}

	origins := &chromiumOrigins{}
	origins.wsEcho = start(echo, false, false)
	origins.wssEcho = start(echo, true, false)

	// page serves "/" (a static page that names the origin) and "/ws", a
	// page whose script opens a WebSocket to wsURL and resolves
	// window.result with the echo.
	page := func(label, wsURL string) func(o *chromiumOrigin) http.Handler {
		return func(o *chromiumOrigin) http.Handler {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
				o.via.Store(r.Header.Get("Via"))
				o.proto.Store(r.Proto)
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprintf(w, `<!doctype html><html><head><title>h2proxy %s</title></head>
<body><p id="msg">hello over %s</p></body></html>`, label, label)
			})
			mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprintf(w, chromiumWSPage, html.EscapeString(wsURL), wsURL)
			})
			// Bodies large enough to need HTTP/2 flow control on
			// both sides of the proxy: Chrome's windows differ from
			// Go's clients'.
			mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				for range chromiumBigRepeat {
					io.WriteString(w, chromiumBigChunk)
				}
			})
			mux.HandleFunc("POST /sum", func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, err := io.Copy(h, r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
			})
			mux.HandleFunc("GET /favicon.ico", http.NotFound)
			return mux
		}
	}
	origins.httpPage = start(page("http", "ws://"+origins.wsEcho.host+"/echo"), false, false)
	origins.httpsPage = start(page("https", "wss://"+origins.wssEcho.host+"/echo"), true, true)

	t.Cleanup(func() {
		// Cancel the WebSocket handlers first, then close the servers:
		// once Close returns no new handler can start, and the hijacked
		// WebSocket connections, which httptest.Server.Close does not
		// track, have their handlers waited for below.
		cancel()
		for _, o := range []*chromiumOrigin{origins.httpPage, origins.httpsPage, origins.wsEcho, origins.wssEcho} {
			o.srv.CloseClientConnections()
			o.srv.Close()
		}
		handlers.Wait()
	})
	return origins
}

// The /big response: chromiumBigChunk repeated chromiumBigRepeat times (4 MiB).
const (
	chromiumBigChunk  = "0123456789abcdef"
	chromiumBigRepeat = 1 << 18
)

// chromiumWSPage opens a WebSocket, sends one message and resolves
// window.result with the first message that comes back, or with a
// description of what went wrong (so a failure says why).
const chromiumWSPage = `<!doctype html><html><head><title>h2proxy websocket</title></head>
<body><p id="url">%s</p><p id="out">pending</p>
<script>
window.result = new Promise((resolve) => {
  const done = (v) => { clearTimeout(timer); document.getElementById("out").textContent = v; resolve(v); };
  const timer = setTimeout(() => done("timeout waiting for the echo"), 15000);
  let ws;
  try { ws = new WebSocket(%q); } catch (e) { done("constructor: " + e); return; }
  ws.onopen = () => ws.send("hello over websocket");
  ws.onmessage = (ev) => { done(String(ev.data)); ws.close(1000, "done"); };
  ws.onerror = () => done("error event");
  ws.onclose = (ev) => done("closed before echo: code " + ev.code);
});
</script></body></html>`

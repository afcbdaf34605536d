package proxy

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/http2"
)

// FuzzServePlain sends whatever a client may send to the cleartext
// listener (HTTP/1.1 requests of every form, CONNECT, Upgrade, h2c prior
// knowledge) and then leaves. Whatever the bytes, once the client has
// gone the proxy must leave no goroutine behind (its idle upstream
// connections closed) and must have logged no recovered panic.
// Destinations: one loopback origin, named in the input by originMark,
// which has the length of its real address so that HPACK literals stay
// valid; the policy refuses every other address, and the resolver
// answers from the hosts file only, so nothing leaves the machine.
func FuzzServePlain(f *testing.F) {
	for _, s := range serveSeeds(f) {
		f.Add(s)
	}
	origin := httptest.NewServer(http.HandlerFunc(fuzzOrigin))
	f.Cleanup(origin.Close)
	originAddr := origin.Listener.Addr().String()
	if len(originAddr) != len(originMark) {
		// Ephemeral ports have five digits on Linux (32768-60999).
		f.Fatalf("origin address %s is not as long as %s", originAddr, originMark)
	}

	var logged lockedBuffer
	log := zerolog.New(&logged)
	allow, _ := ParseRules([]string{"127.0.0.1"})
	// Deny covers every address outside 127.0.0.0/8, public ones
	// included (the default rule refuses only the non-public ones), and
	// Allow lifts that default for 127.0.0.1 alone.
	deny, _ := ParseRules([]string{"0.0.0.0/2", "64.0.0.0/3", "96.0.0.0/4", "112.0.0.0/5",
		"120.0.0.0/6", "124.0.0.0/7", "126.0.0.0/8", "128.0.0.0/1", "::/0"})
	ports, _ := ParsePorts("1-65535")
	s, err := New(Config{
		TLSConfig:         &tls.Config{},
		Policy:            Policy{Allow: allow, Deny: deny, Ports: ports},
		DialTimeout:       2 * time.Second,
		Resolver:          &net.Resolver{PreferGo: true, Dial: noDNS},
		ReadHeaderTimeout: 2 * time.Second,
		Logger:            &log,
	})
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServePlain(ln) }()
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-served
	})

	f.Fuzz(func(t *testing.T, in []byte) {
		logged.Reset() // the last input's goroutines have all ended
		before := runtime.NumGoroutine()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The client does not half-close: net/http takes that for a
		// client gone and cancels its request. It ends with a request
		// that closes the connection instead, which works whenever the
		// input left the parser (or a tunnel's origin) between requests,
		// and otherwise gives up after a moment and closes.
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(bytes.ReplaceAll(in, []byte(originMark), []byte(originAddr)))
		if !bytes.HasPrefix(in, []byte(http2.ClientPreface)) {
			_, _ = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
		}
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()

		// A handler still finishing may put its upstream connection back
		// in the pool after a first sweep, so sweep on every look.
		deadline := time.Now().Add(5 * time.Second)
		for {
			s.fwds.Range(func(_, v any) bool {
				v.(*forwarder).transport.CloseIdleConnections()
				return true
			})
			if runtime.NumGoroutine() <= before {
				break
			}
			if time.Now().After(deadline) {
				var stacks strings.Builder
				_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
				t.Fatalf("goroutines left after the connection ended:\n%s", stacks.String())
			}
			time.Sleep(time.Millisecond)
		}
		if out := logged.String(); strings.Contains(out, "panic") {
			t.Fatalf("the proxy logged a panic:\n%s", out)
		}
	})
}

func noDNS(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no DNS in this test")
}

// fuzzOrigin answers any request with what it was, and accepts WebSocket
// upgrades, echoing what follows.
func fuzzOrigin(w http.ResponseWriter, r *http.Request) {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		_ = rw.Flush()
		_, _ = io.Copy(c, rw)
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	fmt.Fprintf(w, "%s %s %d", r.Method, r.URL, n)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.Reset()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// literal encodes fields as HPACK literals without Huffman coding (RFC
// 7541 §6.2.2), so that originMark appears in the bytes as it is.
func literal(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, 0, byte(len(kv[i])))
		b = append(b, kv[i]...)
		b = append(b, byte(len(kv[i+1])))
		b = append(b, kv[i+1]...)
	}
	return b
}

// originMark stands for the origin's address in the input.
const originMark = "127.0.0.1:00000"

// serveSeeds are well-formed conversations for the fuzzer to mutate; in
// them ORIGIN stands for originMark.
func serveSeeds(f *testing.F) [][]byte {
	h1 := []string{
		"GET http://ORIGIN/a?b=c HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"POST http://ORIGIN/up HTTP/1.1\r\nHost: ORIGIN\r\nContent-Length: 5\r\n\r\nhello" +
			"PUT http://ORIGIN/up HTTP/1.1\r\nHost: ORIGIN\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"CONNECT ORIGIN HTTP/1.1\r\nHost: ORIGIN\r\n\r\nGET / HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"GET http://ORIGIN/chat HTTP/1.1\r\nHost: ORIGIN\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x82abcd\x09\x0b",
		"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: ORIGIN\r\n\r\n",
		"GET http://ORIGIN/ HTTP/1.1\r\nHost: ORIGIN\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
	}
	var seeds [][]byte
	for _, s := range h1 {
		seeds = append(seeds, []byte(strings.ReplaceAll(s, "ORIGIN", originMark)))
	}

	// HTTP/2 with prior knowledge: a tunnel, an RFC 8441 WebSocket, a
	// forwarded request and a refused tunnel, on one connection.
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	hdrs := func(id uint32, end bool, kv ...string) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: end, BlockFragment: literal(kv...)})
	}
	buf.WriteString(http2.ClientPreface)
	_ = fr.WriteSettings()
	hdrs(1, false, ":method", "CONNECT", ":authority", originMark)
	_ = fr.WriteData(1, true, []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	hdrs(3, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", originMark,
		":path", "/chat", "sec-websocket-version", "13")
	_ = fr.WriteData(3, false, []byte("\x81\x82abcd\x09\x0b"))
	hdrs(5, true, ":method", "GET", ":scheme", "http", ":authority", originMark, ":path", "/x")
	hdrs(7, false, ":method", "CONNECT", ":authority", "localhost:1")
	_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
	_ = fr.WriteGoAway(7, http2.ErrCodeNo, nil)
	seeds = append(seeds, buf.Bytes())
	return seeds
}

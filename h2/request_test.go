package h2

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/net/http2"
)

func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestSettingsAdvertised(t *testing.T) {
	rc := newRawClient(t, Config{MaxConcurrentStreams: 7}, http.NotFoundHandler(), false)
	got := rc.handshake()
	want := map[http2.SettingID]uint32{
		http2.SettingEnableConnectProtocol: 1,
		http2.SettingMaxConcurrentStreams:  7,
		http2.SettingInitialWindowSize:     4 << 20,
		http2.SettingMaxHeaderListSize:     64 << 10,
	}
	for id, v := range want {
		if got[id] != v {
			t.Errorf("%v = %d, want %d", id, got[id], v)
		}
	}
	// The connection window is opened too.
	f := rc.readUntil(func(f http2.Frame) bool { _, ok := f.(*http2.WindowUpdateFrame); return ok })
	if wu := f.(*http2.WindowUpdateFrame); wu.StreamID != 0 || wu.Increment != 8<<20-65535 {
		t.Errorf("WINDOW_UPDATE %d +%d", wu.StreamID, wu.Increment)
	}
}

func TestRequestFieldsReachHandler(t *testing.T) {
	type seen struct {
		method, host, proto, uri, scheme, urlHost, path, cookie, remote string
		major                                                           int
		cl                                                              int64
		body                                                            string
	}
	ch := make(chan seen, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- seen{r.Method, r.Host, r.Proto, r.RequestURI, r.URL.Scheme, r.URL.Host, r.URL.Path,
			r.Header.Get("Cookie"), r.RemoteAddr, r.ProtoMajor, r.ContentLength, string(b)}
		_, _ = io.WriteString(w, "ok")
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "origin.test:8080",
		":path", "/a/b?q=1", "cookie", "a=1", "cookie", "b=2", "content-length", "5")
	rc.must(rc.fr.WriteData(1, true, []byte("hello")))
	r := rc.readResponse(1)
	got := <-ch
	want := seen{"POST", "origin.test:8080", "HTTP/2.0", "/a/b?q=1", "http", "origin.test:8080", "/a/b",
		"a=1; b=2", rc.nc.LocalAddr().String(), 2, 5, "hello"}
	if got != want {
		t.Errorf("handler saw %+v\nwant %+v", got, want)
	}
	if r.status != 200 || string(r.body) != "ok" || r.header.Get("content-length") != "2" {
		t.Errorf("response %d %q %v", r.status, r.body, r.header)
	}
}

func TestMalformedRequestsResetProtocolError(t *testing.T) {
	base := []string{":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/"}
	cases := map[string][]string{
		"connection header": append(base[:8:8], "connection", "keep-alive"),
		"upgrade header":    append(base[:8:8], "upgrade", "websocket"),
		"te gzip":           append(base[:8:8], "te", "gzip"),
		"missing path":      {":method", "GET", ":scheme", "https", ":authority", "a.test"},
		"missing scheme":    {":method", "GET", ":authority", "a.test", ":path", "/"},
		"missing method":    {":scheme", "https", ":authority", "a.test", ":path", "/"},
		"empty path":        {":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", ""},
		"relative path":     {":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "x"},
		"status pseudo":     append(base[:8:8], ":status", "200"),
		"uppercase name":    append(base[:8:8], "X-Upper", "1"),
		"host mismatch":     append(base[:8:8], "host", "b.test"),
		"protocol on GET":   append(base[:8:8], ":protocol", "websocket"),
		"bad content-len":   append(base[:8:8], "content-length", "x"),
		"padded value":      append(base[:8:8], "x-a", " v"),
		"connect + scheme":  {":method", "CONNECT", ":authority", "a.test:443", ":scheme", "https"},
		"connect + path":    {":method", "CONNECT", ":authority", "a.test:443", ":path", "/"},
		"connect no author": {":method", "CONNECT"},
		"ext connect, no path": {":method", "CONNECT", ":protocol", "websocket", ":scheme", "https",
			":authority", "a.test"},
	}
	called := false
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })
	for name, kv := range cases {
		t.Run(name, func(t *testing.T) {
			rc := newRawClient(t, Config{}, h, false)
			rc.handshake()
			rc.headers(1, true, kv...)
			rc.expectReset(1, http2.ErrCodeProtocol)
			// The connection survives a stream error.
			rc.get(3, "/")
			if r := rc.readResponse(3); r.rst != nil {
				t.Fatalf("stream 3 reset %v", *r.rst)
			}
		})
	}
	_ = called
}

func TestExtendedConnectOnlyWhenAdvertised(t *testing.T) {
	rc := newRawClient(t, Config{DisableConnectProtocol: true}, http.NotFoundHandler(), false)
	if got := rc.handshake(); got[http2.SettingEnableConnectProtocol] != 0 {
		t.Fatalf("ENABLE_CONNECT_PROTOCOL advertised although disabled")
	}
	rc.headers(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "https",
		":authority", "a.test", ":path", "/chat")
	rc.expectReset(1, http2.ErrCodeProtocol)
}

func TestExtendedConnectReachesHandler(t *testing.T) {
	ch := make(chan *http.Request, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch <- r
		w.WriteHeader(http.StatusNoContent)
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	rc.headers(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http",
		":authority", "a.test", ":path", "/chat?x=1")
	r := <-ch
	if Protocol(r) != "websocket" || r.URL.Scheme != "http" || r.URL.Host != "a.test" || r.URL.Path != "/chat" ||
		r.Host != "a.test" || r.RequestURI != "/chat?x=1" {
		t.Errorf("request %s %v host=%q uri=%q proto=%q", r.Method, r.URL, r.Host, r.RequestURI, Protocol(r))
	}
	if resp := rc.readResponse(1); resp.status != 204 {
		t.Errorf("status %d", resp.status)
	}
}

func TestClassicConnectRequest(t *testing.T) {
	ch := make(chan *http.Request, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch <- r
		w.WriteHeader(http.StatusForbidden)
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	rc.headers(1, false, ":method", "CONNECT", ":authority", "target.test:443")
	r := <-ch
	if r.URL.Host != "target.test:443" || r.URL.Scheme != "" || r.URL.Path != "" ||
		r.RequestURI != "target.test:443" || r.Host != "target.test:443" || Protocol(r) != "" {
		t.Errorf("request %v host=%q uri=%q", r.URL, r.Host, r.RequestURI)
	}
	resp := rc.readResponse(1)
	if resp.status != 403 {
		t.Errorf("status %d", resp.status)
	}
}

func TestBadAuthorityIs400(t *testing.T) {
	called := make(chan struct{}, 10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called <- struct{}{} })
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	id := uint32(1)
	for _, kv := range [][]string{
		{":method", "CONNECT", ":authority", "no-port.test"},
		{":method", "CONNECT", ":authority", "user@a.test:443"},
		{":method", "CONNECT", ":authority", "a.test:99999"},
		{":method", "CONNECT", ":authority", "a b.test:443"},
		{":method", "CONNECT", ":authority", "[::1:443"},
		{":method", "GET", ":scheme", "https", ":authority", "a.test:x", ":path", "/"},
	} {
		rc.headers(id, false, kv...)
		if r := rc.readResponse(id); r.status != 400 {
			t.Errorf("%v: status %d rst %v", kv, r.status, r.rst)
		}
		id += 2
	}
	if len(called) != 0 {
		t.Errorf("handler called for a bad authority")
	}
}

func TestForwardingHandlerBodyAndTrailers(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(200)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write([]byte(strings.ToUpper(string(b))))
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", r.Trailer.Get("X-Client-Sum"))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/up",
		"trailer", "x-client-sum")
	rc.must(rc.fr.WriteData(1, false, []byte("abc")))
	rc.must(rc.fr.WriteData(1, false, []byte("def")))
	rc.headers(1, true, "x-client-sum", "42")
	r := rc.readResponse(1)
	if string(r.body) != "ABCDEF" || r.trailer.Get("x-sum") != "42" || r.trailer.Get("x-late") != "late" {
		t.Errorf("body %q trailer %v", r.body, r.trailer)
	}
	if r.header.Get("content-length") != "" {
		t.Errorf("flushed response has content-length %q", r.header.Get("content-length"))
	}
}

func TestTrailersMustEndStream(t *testing.T) {
	rc := newRawClient(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
	}), false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/")
	rc.headers(1, false, "x-t", "1") // second HEADERS without END_STREAM (§8.1)
	rc.expectReset(1, http2.ErrCodeProtocol)
}

func TestContentLengthMismatch(t *testing.T) {
	rc := newRawClient(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
	}), false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/",
		"content-length", "3")
	rc.must(rc.fr.WriteData(1, true, []byte("toolong")))
	rc.expectReset(1, http2.ErrCodeProtocol)
	rc.headers(3, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/",
		"content-length", "10")
	rc.must(rc.fr.WriteData(3, true, []byte("short")))
	rc.expectReset(3, http2.ErrCodeProtocol)
}

func TestRSTNoErrorWhenHandlerIgnoresBody(t *testing.T) {
	rc := newRawClient(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "early answer")
	}), false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/")
	r := rc.readResponse(1) // ends with END_STREAM
	if string(r.body) != "early answer" {
		t.Fatalf("body %q", r.body)
	}
	rc.expectReset(1, http2.ErrCodeNo)
}

func TestHandlerPanicAbortResetsStream(t *testing.T) {
	rc := newRawClient(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		_, _ = io.WriteString(w, "fine")
	}), false)
	rc.handshake()
	rc.get(1, "/abort")
	rc.expectReset(1, http2.ErrCodeInternal)
	rc.get(3, "/")
	if r := rc.readResponse(3); string(r.body) != "fine" {
		t.Fatalf("after abort: %+v", r)
	}
}

func TestInformationalAndExpectContinue(t *testing.T) {
	rc := newRawClient(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</s.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}), false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/",
		"expect", "100-continue")
	rc.must(rc.fr.WriteData(1, true, []byte("x")))
	r := rc.readResponse(1)
	// 100 Continue still goes out when the body is read: 103 is not final.
	if len(r.infos) != 2 || r.infos[0] != 103 || r.infos[1] != 100 || string(r.body) != "x" {
		t.Fatalf("infos %v body %q", r.infos, r.body)
	}
	rc.headers(3, false, ":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/",
		"expect", "100-continue")
	f := rc.readUntil(func(f http2.Frame) bool { return f.Header().StreamID == 3 })
	if mh, ok := f.(*http2.MetaHeadersFrame); !ok || mh.PseudoValue("status") != "103" {
		t.Fatalf("first frame on stream 3: %v", f)
	}
	f = rc.readUntil(func(f http2.Frame) bool { return f.Header().StreamID == 3 })
	if mh, ok := f.(*http2.MetaHeadersFrame); !ok || mh.PseudoValue("status") != "100" {
		t.Fatalf("want 100 Continue, got %v", f)
	}
	rc.must(rc.fr.WriteData(3, true, []byte("y")))
	if r := rc.readResponse(3); string(r.body) != "y" {
		t.Fatalf("body %q", r.body)
	}
}

func TestRefusedStreamAboveLimit(t *testing.T) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Done()
		<-release
	})
	rc := newRawClient(t, Config{MaxConcurrentStreams: 2}, h, false)
	rc.handshake()
	wg.Add(2)
	rc.get(1, "/")
	rc.get(3, "/")
	wg.Wait()
	rc.get(5, "/")
	rc.expectReset(5, http2.ErrCodeRefusedStream)
	close(release)
	rc.readResponses(1, 3)
	wg.Add(1)
	rc.get(7, "/")
	if r := rc.readResponse(7); r.status != 200 {
		t.Fatalf("stream 7 after others finished: %+v", r)
	}
}

func TestStreamIDRules(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	t.Run("even", func(t *testing.T) {
		rc := newRawClient(t, Config{}, ok, false)
		rc.handshake()
		rc.get(2, "/")
		rc.expectGoAway(http2.ErrCodeProtocol)
	})
	t.Run("decreasing", func(t *testing.T) {
		rc := newRawClient(t, Config{}, ok, false)
		rc.handshake()
		rc.get(5, "/")
		rc.readResponse(5)
		rc.get(3, "/")
		rc.expectGoAway(http2.ErrCodeProtocol)
	})
	t.Run("data on idle", func(t *testing.T) {
		rc := newRawClient(t, Config{}, ok, false)
		rc.handshake()
		rc.must(rc.fr.WriteData(9, true, []byte("x")))
		rc.expectGoAway(http2.ErrCodeProtocol)
	})
}

func TestRejectHook(t *testing.T) {
	hosts := make(chan string, 1)
	cfg := Config{Reject: func(w http.ResponseWriter, r *http.Request, status int) {
		hosts <- r.Host
		w.Header().Set("Proxy-Status", "test; error=http_request_error")
		w.WriteHeader(status)
	}}
	rc := newRawClient(t, cfg, http.NotFoundHandler(), false)
	rc.handshake()
	rc.headers(1, false, ":method", "CONNECT", ":authority", "no-port.test")
	r := rc.readResponse(1)
	if r.status != 400 || r.header.Get("proxy-status") != "test; error=http_request_error" {
		t.Fatalf("status %d header %v", r.status, r.header)
	}
	if h := <-hosts; h != "no-port.test" {
		t.Fatalf("Reject saw host %q", h)
	}
}

// The forwarding path: httputil.ReverseProxy in the handler relays a
// request body and the origin's trailers.
func TestReverseProxyTrailers(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Origin-Sum")
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append([]byte("origin got "), b...))
		w.Header().Set("X-Origin-Sum", "7")
	}))
	defer origin.Close()
	u, _ := url.Parse(origin.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rc := newRawClient(t, Config{}, rp, false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", u.Host, ":path", "/p")
	rc.must(rc.fr.WriteData(1, true, []byte("payload")))
	r := rc.readResponse(1)
	if r.status != 200 || string(r.body) != "origin got payload" || r.trailer.Get("x-origin-sum") != "7" {
		t.Fatalf("status %d body %q trailer %v", r.status, r.body, r.trailer)
	}
}

// r.Context() ends when the client resets the stream or the connection
// goes away.
func TestRequestContextCancelled(t *testing.T) {
	causes := make(chan error, 2)
	started := make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		causes <- context.Cause(r.Context())
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	rc.get(1, "/")
	<-started
	rc.must(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	var se *StreamError
	if err := <-causes; !errors.As(err, &se) || !se.Remote || se.Code != http2.ErrCodeCancel {
		t.Fatalf("cause after RST_STREAM: %v", err)
	}
	rc.get(3, "/")
	<-started
	_ = rc.nc.Close()
	if err := <-causes; !errors.Is(err, errConnClosed) {
		t.Fatalf("cause after connection loss: %v", err)
	}
}

func TestHandlerPanicIsContained(t *testing.T) {
	rc := newRawClient(t, Config{Logger: testLogger(t)}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/boom" {
			panic("boom")
		}
	}), false)
	rc.handshake()
	rc.get(1, "/boom")
	rc.expectReset(1, http2.ErrCodeInternal)
	rc.get(3, "/")
	if r := rc.readResponse(3); r.status != 200 {
		t.Fatalf("after panic: %+v", r)
	}
}

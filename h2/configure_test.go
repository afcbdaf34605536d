package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// echoHandler reports how the request arrived and echoes its body.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		c, err := Accept(w, r, nil)
		if err != nil {
			return
		}
		_, _ = io.Copy(c, c)
		_ = c.CloseWrite()
		_ = c.Close()
		return
	}
	if strings.HasPrefix(r.URL.Path, "/big/") {
		var n int
		_, _ = fmt.Sscan(r.URL.Path[len("/big/"):], &n)
		_, _ = w.Write(bytes.Repeat([]byte("z"), n))
		return
	}
	w.Header().Set("X-Proto", r.Proto)
	w.Header().Set("X-Scheme", r.URL.Scheme)
	w.Header().Set("X-TLS", fmt.Sprint(r.TLS != nil))
	_, _ = io.Copy(w, r.Body)
}

type configured struct {
	srv       *http.Server
	tlsAddr   string
	plainAddr string
	done      chan struct{}
}

// startConfigured runs an http.Server set up by Configure on a TLS and a
// cleartext loopback listener.
func startConfigured(t *testing.T) *configured {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(echoHandler)}
	Configure(srv, Config{})
	tcfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2", "http/1.1"}}
	tl, err := tls.Listen("tcp", "127.0.0.1:0", tcfg)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := &configured{srv: srv, tlsAddr: tl.Addr().String(), plainAddr: pl.Addr().String(), done: make(chan struct{}, 2)}
	go func() { _ = srv.Serve(tl); cs.done <- struct{}{} }()
	go func() { _ = srv.Serve(pl); cs.done <- struct{}{} }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-cs.done
		<-cs.done
	})
	return cs
}

func h2Client(t *testing.T) *http.Client {
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // loopback test cert
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func h2cClient(t *testing.T) *http.Client {
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestConfigureServesNativeH2(t *testing.T) {
	cs := startConfigured(t)
	h1tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	t.Cleanup(h1tr.CloseIdleConnections)
	for _, tc := range []struct {
		name, url, proto, scheme, tls string
		client                        *http.Client
	}{
		{"h2 over TLS", "https://" + cs.tlsAddr + "/x", "HTTP/2.0", "https", "true", h2Client(t)},
		{"h2c prior knowledge", "http://" + cs.plainAddr + "/x", "HTTP/2.0", "http", "false", h2cClient(t)},
		{"h1 over TLS", "https://" + cs.tlsAddr + "/x", "HTTP/1.1", "", "true", &http.Client{Transport: h1tr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.client.Post(tc.url, "text/plain", strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got := []string{resp.Header.Get("X-Proto"), resp.Header.Get("X-Scheme"), resp.Header.Get("X-TLS"), string(b)}
			want := []string{tc.proto, tc.scheme, tc.tls, "body"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestConfigureServeTLSKeepsH2(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(echoHandler),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}}
	Configure(srv, Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.ServeTLS(ln, "", ""); close(done) }()
	defer func() { _ = srv.Close(); <-done }()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q", p)
	}
}

func TestTransportLargeBodies(t *testing.T) {
	cs := startConfigured(t)
	client := h2Client(t)
	const n = 8 << 20
	resp, err := client.Get(fmt.Sprintf("https://%s/big/%d", cs.tlsAddr, n))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || got != n {
		t.Fatalf("download %d bytes, %v", got, err)
	}
	body := bytes.Repeat([]byte("u"), n)
	resp, err = client.Post("https://"+cs.tlsAddr+"/echo", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	echoed, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(echoed, body) {
		t.Fatalf("echo %d bytes, %v", len(echoed), err)
	}
}

// x/net's Transport speaks RFC 8441 once we advertise
// SETTINGS_ENABLE_CONNECT_PROTOCOL: no GODEBUG needed.
func TestTransportExtendedConnect(t *testing.T) {
	cs := startConfigured(t)
	client := h2Client(t)
	// Open the connection first so that the client has our SETTINGS.
	if resp, err := client.Get("https://" + cs.tlsAddr + "/warmup"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodConnect, "https://"+cs.tlsAddr+"/chat", pr)
	req.Header.Set(":protocol", "websocket")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	go func() {
		_, _ = pw.Write([]byte("hello tunnel"))
		_ = pw.Close()
	}()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "hello tunnel" {
		t.Fatalf("echo %q, %v", b, err)
	}
}

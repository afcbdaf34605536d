package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"
)

type forwardKey struct{}

// forwardInfo travels in the request context from serveForward to the
// reverse proxy's hooks.
type forwardInfo struct {
	scheme string
	target target
	err    *Error
}

// forwarder forwards plain HTTP requests over a pool of upstream
// connections. Each destination policy has its own, so that a connection
// dialled under one user's policy is never reused under another's.
type forwarder struct {
	transport *http.Transport
	http.Handler
}

func (s *Server) forwarderFor(p *Policy) *forwarder {
	if f, ok := s.fwds.Load(p); ok {
		return f.(*forwarder)
	}
	f, _ := s.fwds.LoadOrStore(p, s.newForwarder())
	return f.(*forwarder)
}

// newForwarder builds the reverse proxy that forwards plain HTTP requests
// over pooled upstream connections. httputil.ReverseProxy already strips
// the hop-by-hop fields both ways (RFC 9110 §7.6.1: Connection and the
// fields it names, Proxy-Connection, Keep-Alive, Proxy-Authorization, TE
// except "trailers", Upgrade) and streams bodies without buffering them.
func (s *Server) newForwarder() *forwarder {
	transport := &http.Transport{
		Proxy:                 nil, // never chain to an environment proxy
		DialContext:           s.dialer.DialContext,
		TLSClientConfig:       s.cfg.UpstreamTLS,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   s.cfg.DialTimeout,
		ExpectContinueTimeout: time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			fi := pr.In.Context().Value(forwardKey{}).(*forwardInfo)
			pr.Out.URL.Scheme = fi.scheme
			pr.Out.URL.Host = fi.target.authority()
			// The request target wins over any Host field (RFC 9112 §3.2.2).
			pr.Out.Host = ""
			pr.Out.Header.Add("Via", s.via(pr.In))
		},
		Transport: transport,
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Add("Via", s.via(resp.Request))
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			fi := r.Context().Value(forwardKey{}).(*forwardInfo)
			fi.err = asError(err)
			s.refuse(w, r, fi.err)
		},
		ErrorLog: s.hs.ErrorLog,
	}
	return &forwarder{transport: transport, Handler: rp}
}

// via renders this hop for the Via field (RFC 9110 §7.6.3). The comment
// carries this instance's id, for loop detection.
func (s *Server) via(r *http.Request) string {
	proto := "1.1"
	if r.ProtoMajor == 2 {
		proto = "2"
	}
	return proto + " h2proxy (" + s.id + ")"
}

// looped reports a request that already passed through this instance.
func (s *Server) looped(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		if strings.Contains(v, "("+s.id+")") {
			return true
		}
	}
	return false
}

// serveForward forwards a request for an http:// (or https://) URL.
func (s *Server) serveForward(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	scheme := r.URL.Scheme
	if scheme == "" {
		// net/http's HTTP/2 server hides :scheme; browsers send only
		// http:// URLs this way (https:// goes through CONNECT).
		scheme = "http"
	}
	authority := requestTarget(r)
	if scheme != "http" && scheme != "https" {
		s.fail(w, r, kindForward, authority, start, errBadRequest("unsupported scheme "+scheme))
		return
	}
	t, perr := parseAuthority(authority, defaultPort(scheme))
	if perr == nil {
		perr = s.policyFrom(r.Context()).precheck(t)
	}
	if perr != nil {
		s.fail(w, r, kindForward, authority, start, perr)
		return
	}
	// Only WebSocket upgrades are relayed; any other Upgrade (h2c, TLS)
	// is dropped rather than passed on (RFC 9110 §7.8).
	r.Header.Del("Upgrade")
	r.Header.Del("HTTP2-Settings")

	fi := &forwardInfo{scheme: scheme, target: t}
	body := &countingBody{ReadCloser: r.Body, left: r.ContentLength}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		// ReverseProxy aborts a response whose body broke off upstream
		// with panic(http.ErrAbortHandler), which makes net/http cut the
		// client connection. The request still gets its access line.
		if v := recover(); v != nil {
			err := errResponseAborted
			if v != http.ErrAbortHandler {
				err = fmt.Errorf("panic: %v", v)
			}
			s.access(r, kindForward, t.authority(), cw.status, body.n.Load(), cw.n, start, err)
			panic(v)
		}
	}()
	s.forwarderFor(s.policyFrom(r.Context())).ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), forwardKey{}, fi)))
	var err error
	if fi.err != nil {
		err = fi.err
	}
	s.access(r, kindForward, t.authority(), cw.status, body.n.Load(), cw.n, start, err)
}

// errResponseAborted is logged for a forwarded response that broke off
// after its head was sent (the upstream connection failed mid-body).
var errResponseAborted = errors.New("response aborted: the upstream connection failed during the body")

// hopHeaders are removed when a message crosses the proxy (RFC 9110
// §7.6.1), besides those named by Connection.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "HTTP2-Settings"}

func stripHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// countingBody counts request body bytes sent upstream. A body of known
// length ends by itself once that many bytes passed: http.Transport reads
// once more to see the end, and by then the response may be under way:
// net/http's HTTP/1.1 server drains or closes the request body when the
// response head is written. The Transport took that read's error for a
// failed request write and closed the upstream connection in the middle
// of the response body.
type countingBody struct {
	io.ReadCloser
	left int64 // bytes still expected; -1: unknown (chunked)
	n    atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if b.left > 0 {
		b.left -= int64(n)
		if b.left == 0 && err == nil {
			err = io.EOF
		}
	}
	return n, err
}

// countingWriter records the status and counts response body bytes. Unwrap
// lets http.ResponseController reach Flush on the real writer.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

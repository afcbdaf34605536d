package h2

import (
	"context"
	"net/http"
	"net/url"
	"runtime"
	"strings"

	"golang.org/x/net/http2"
)

// pendingStart is a request whose handler waits for a free handler slot.
type pendingStart struct {
	s   *stream
	rw  *responseWriter
	req *http.Request
	h   http.Handler
}

// onHeaders opens a stream (§5.1) or, on an open one, takes trailers.
func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return protoErr("HEADERS on even stream %d", id)
	}
	if s := c.streams[id]; s != nil {
		return c.onTrailers(s, f)
	}
	if id <= c.maxClientID {
		found, weReset := c.recentlyClosed(id)
		switch {
		case weReset, c.goawaySent && id > c.lastID:
			return nil // §5.1: ignored after our RST_STREAM
		case found:
			return &connError{http2.ErrCodeStreamClosed, "HEADERS on closed stream"}
		}
		return protoErr("stream id %d not above %d", id, c.maxClientID) // §5.1.1
	}
	c.maxClientID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		return c.streamErrorLocked(id, http2.ErrCodeProtocol) // §5.3.1
	}
	if c.goawaySent && id > c.lastID {
		return nil // §6.8: not processed; the client may retry elsewhere
	}
	if c.active >= c.cfg.MaxConcurrentStreams {
		// §5.1.2: refused streams are safe to retry.
		return c.streamErrorLocked(id, http2.ErrCodeRefusedStream)
	}
	ri, code := c.parseRequest(f)
	if code == 0 && ri.status == 0 && f.StreamEnded() && ri.wantLen > 0 {
		code = http2.ErrCodeProtocol // §8.1.1: content-length without DATA
	}
	if code != 0 {
		return c.streamErrorLocked(id, code)
	}
	s := c.newStream(id, f.StreamEnded(), ri)
	ps := c.newPending(s, ri, f.StreamEnded())
	return c.startHandler(ps)
}

// onTrailers handles a second header block: trailers, which must end the
// stream (§8.1) and carry no pseudo-headers (§8.3). A CONNECT stream
// carries only DATA (§8.5).
func (c *conn) onTrailers(s *stream, f *http2.MetaHeadersFrame) error {
	if !s.remoteOpen() {
		return c.streamErrorLocked(s.id, http2.ErrCodeStreamClosed) // §5.1
	}
	if s.isConnect || !f.StreamEnded() || len(f.PseudoFields()) > 0 || f.Truncated {
		return c.streamErrorLocked(s.id, http2.ErrCodeProtocol)
	}
	var ignore int64 = -1
	hdr, _, code := parseFields(f.RegularFields(), &ignore)
	if code != 0 || s.wantLen >= 0 && s.gotLen != s.wantLen {
		return c.streamErrorLocked(s.id, http2.ErrCodeProtocol)
	}
	s.trailer = hdr
	c.remoteEnd(s)
	return nil
}

func (c *conn) newStream(id uint32, ended bool, ri *reqInfo) *stream {
	s := &stream{
		c: c, id: id,
		isConnect:  ri.method == http.MethodConnect,
		rwake:      make(chan struct{}, 1),
		wwake:      make(chan struct{}, 1),
		sendWindow: c.peerInitWindow,
		recvWindow: int64(c.cfg.StreamWindow),
		wantLen:    ri.wantLen,
	}
	if ended {
		s.state = stHalfClosedRemote
	} else if ri.header != nil {
		s.expect100 = strings.EqualFold(ri.header.Get("Expect"), "100-continue")
	}
	s.ctx, s.cancel = context.WithCancelCause(c.ctx)
	c.streams[id] = s
	c.active++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return s
}

// newPending builds the request and response writer for s.
func (c *conn) newPending(s *stream, ri *reqInfo, ended bool) *pendingStart {
	h := c.h
	if ri.status != 0 {
		h = c.rejectHandler(ri.status)
		if ri.url == nil {
			ri.url = &url.URL{Path: "/"}
		}
		if ri.header == nil {
			ri.header = make(http.Header)
		}
	}
	req := &http.Request{
		Method:     ri.method,
		URL:        ri.url,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     ri.header,
		Host:       ri.authority,
		RemoteAddr: c.remoteAddr,
		RequestURI: ri.path,
		TLS:        c.tlsState,
		Trailer:    declaredTrailers(ri.header),
	}
	if ri.classicConnect() {
		req.RequestURI = ri.authority
	}
	rw := newResponseWriter(s, req)
	if ended {
		req.Body = http.NoBody
	} else {
		req.ContentLength = ri.wantLen
		req.Body = &requestBody{s: s, rw: rw}
	}
	req = req.WithContext(s.ctx)
	rw.req = req
	return &pendingStart{s: s, rw: rw, req: req, h: h}
}

// startHandler runs the handler at once, or queues it while
// MaxConcurrentStreams handlers (reset streams included) are still
// running, so that resetting streams cannot multiply goroutines (Rapid
// Reset, CVE-2023-44487). Too long a queue is an attack.
func (c *conn) startHandler(ps *pendingStart) error {
	if c.handlers >= c.cfg.MaxConcurrentStreams {
		if len(c.unstarted) >= 4*c.cfg.MaxConcurrentStreams {
			return &connError{http2.ErrCodeEnhanceYourCalm, "too many pending handlers"}
		}
		c.unstarted = append(c.unstarted, ps)
		return nil
	}
	c.handlers++
	go c.runHandler(ps)
	return nil
}

func (c *conn) runHandler(ps *pendingStart) {
	detached := false
	defer func() {
		if !detached {
			c.handlerDone()
		}
	}()
	panicked := true
	defer func() {
		if !panicked {
			// A detached tunnel keeps the handler slot until it is closed
			// (tunnelConn.release), so resets still cannot multiply the
			// goroutines behind streams.
			detached = ps.rw.finish()
			return
		}

		e := recover()
		if e != http.ErrAbortHandler {
			buf := make([]byte, 16<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.cfg.Logger.Error("h2: handler panic", "remote", c.remoteAddr, "panic", e, "stack", string(buf))
		}
		ps.rw.abort(http2.ErrCodeInternal)
	}()
	ps.h.ServeHTTP(ps.rw, ps.req)
	panicked = false
}

func (c *conn) handlerDone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handlers--
	for len(c.unstarted) > 0 && c.handlers < c.cfg.MaxConcurrentStreams {
		ps := c.unstarted[0]
		c.unstarted[0] = nil
		c.unstarted = c.unstarted[1:]
		if ps.s.err != nil {
			continue // reset while waiting: never run it
		}
		c.handlers++
		go c.runHandler(ps)
	}
}

// rejectHandler answers requests the engine refused at the HTTP level.
func (c *conn) rejectHandler(status int) http.Handler {
	if reject := c.cfg.Reject; reject != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reject(w, r, status) })
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(http.StatusText(status) + "\n"))
	})
}

package h2

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bufferedBody is how much body a handler may write before the response
// headers go out; a response complete within it gets a Content-Length, as
// with net/http.
const bufferedBody = 4 << 10

// responseWriter is the http.ResponseWriter, http.Flusher and tunnel
// acceptor of one stream. It is used by the handler goroutine only.
type responseWriter struct {
	s      *stream
	req    *http.Request
	hdr    http.Header
	snap   http.Header // hdr as of WriteHeader
	status int

	sentHeader   bool
	buf          []byte
	written      int64
	declLen      int64
	trailerNames []string
	tunnel       *tunnelConn
	done         bool
}

func newResponseWriter(s *stream, req *http.Request) *responseWriter {
	return &responseWriter{s: s, req: req, hdr: make(http.Header), declLen: -1}
}

func (rw *responseWriter) Header() http.Header { return rw.hdr }

func (rw *responseWriter) WriteHeader(code int) {
	if rw.tunnel != nil || rw.done {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if rw.status != 0 {
		return // superfluous, as net/http (which logs it)
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols { // §8.6: no 101 in HTTP/2
			_ = rw.s.pushHeaders(false, responseFields(code, rw.hdr), false)
		}
		return
	}
	rw.status = code
	rw.snap = rw.hdr.Clone()
	if rw.snap == nil {
		rw.snap = make(http.Header)
	}
	if cl := rw.snap.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			rw.declLen = n
		} else {
			rw.snap.Del("Content-Length")
		}
	}
}

func (rw *responseWriter) isHead() bool { return rw.req.Method == http.MethodHead }

func (rw *responseWriter) Write(p []byte) (int, error) {
	if rw.tunnel != nil {
		return 0, errors.New("h2: Write on a stream turned into a tunnel")
	}
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(rw.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if rw.isHead() {
		return len(p), nil
	}
	rw.written += int64(len(p))
	if rw.declLen >= 0 && rw.written > rw.declLen {
		return 0, http.ErrContentLength
	}
	if !rw.sentHeader && len(rw.buf)+len(p) <= bufferedBody {
		rw.buf = append(rw.buf, p...)
		return len(p), nil
	}
	if err := rw.commit(false); err != nil {
		return 0, err
	}
	if err := rw.writeBuffered(); err != nil {
		return 0, err
	}
	return rw.s.write(p)
}

func (rw *responseWriter) WriteString(s string) (int, error) { return rw.Write([]byte(s)) }

// Flush implements http.Flusher.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// FlushError sends the headers and any buffered body and waits until they
// are handed to the connection (used by http.ResponseController).
func (rw *responseWriter) FlushError() error {
	if rw.tunnel != nil || rw.done {
		return nil
	}
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if err := rw.commit(false); err != nil {
		return err
	}
	if err := rw.writeBuffered(); err != nil {
		return err
	}
	return rw.s.flush()
}

// writeBuffered moves the body held before the headers went out to the
// stream.
func (rw *responseWriter) writeBuffered() error {
	if len(rw.buf) == 0 {
		return nil
	}
	_, err := rw.s.write(rw.buf)
	rw.buf = rw.buf[:0]
	return err
}

// commit queues the final response headers. With final (the handler
// returned) a body that fit the buffer gets its Content-Length.
func (rw *responseWriter) commit(final bool) error {
	if rw.sentHeader {
		return nil
	}
	rw.sentHeader = true
	h := rw.snap
	if bodyAllowed(rw.status) {
		if final && rw.declLen < 0 && (len(rw.buf) > 0 || !rw.isHead()) {
			h.Set("Content-Length", strconv.Itoa(len(rw.buf)))
		}
		if _, ok := h["Content-Type"]; !ok && len(rw.buf) > 0 && h.Get("Content-Encoding") == "" {
			h.Set("Content-Type", http.DetectContentType(rw.buf))
		}
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				rw.trailerNames = append(rw.trailerNames, http.CanonicalHeaderKey(k))
			}
		}
	}
	if final {
		return nil // finish queues the headers with the rest
	}
	return rw.s.pushHeaders(true, responseFields(rw.status, h), false)
}

// finish completes the response after the handler returned: headers if
// not yet sent, buffered body, trailers, END_STREAM; and RST_STREAM
// NO_ERROR if the client is still sending (RFC 9113 §8.1). It reports
// whether the stream is a detached tunnel, which lives on.
func (rw *responseWriter) finish() (detached bool) {
	if rw.done {
		return false
	}
	if rw.tunnel != nil {
		rw.done = true
		if rw.tunnel.detached {
			return true
		}
		_ = rw.tunnel.Close()
		rw.s.cancel(errHandlerDone)
		return false
	}
	defer rw.s.cancel(errHandlerDone)
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	rw.done = true
	wasSent := rw.sentHeader
	_ = rw.commit(true)
	trailers := rw.trailerFields()
	if !wasSent {
		end := len(rw.buf) == 0 && trailers == nil
		_ = rw.s.pushHeaders(true, responseFields(rw.status, rw.snap), end)
	}
	_ = rw.writeBuffered()
	_ = rw.s.finishOut(trailers)
	rw.buf = nil
	return false
}

var errHandlerDone = errors.New("h2: handler returned")

// abort resets the stream, for a handler that panicked.
func (rw *responseWriter) abort(code http2.ErrCode) {
	rw.done = true
	c := rw.s.c
	c.mu.Lock()
	c.resetStream(rw.s, code)
	if rw.tunnel != nil {
		rw.tunnel.released = true // runHandler frees the handler slot
	}
	c.mu.Unlock()
	rw.s.cancel(errHandlerDone)
}

// trailerFields collects declared trailers and http.TrailerPrefix ones.
func (rw *responseWriter) trailerFields() []hpack.HeaderField {
	var out []hpack.HeaderField
	add := func(k string, vv []string) {
		lk := strings.ToLower(k)
		if !httpguts.ValidHeaderFieldName(k) || connSpecific[lk] || lk == "content-length" {
			return
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				out = append(out, hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	for _, k := range rw.trailerNames {
		add(k, rw.hdr[k])
	}
	for k, vv := range rw.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(name, vv)
		}
	}
	return out
}

// responseFields turns a status and header into HPACK fields, dropping
// what HTTP/2 forbids (§8.2.2) and what is not a valid field.
func responseFields(status int, h http.Header) []hpack.HeaderField {
	fields := make([]hpack.HeaderField, 0, len(h)+1)
	fields = append(fields, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		lk := strings.ToLower(k)
		if connSpecific[lk] || lk == "te" {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				fields = append(fields, hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	return fields
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// requestBody is the request's flow-controlled DATA.
type requestBody struct {
	s  *stream
	rw *responseWriter
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.s.maybeSend100()
	n, err := b.s.read(p)
	if err == io.EOF {
		b.takeTrailers()
	}
	return n, err
}

// takeTrailers hands received trailers to the handler's Request.Trailer on
// the goroutine that saw EOF, as net/http does.
func (b *requestBody) takeTrailers() {
	c := b.s.c
	c.mu.Lock()
	t := b.s.trailer
	b.s.trailer = nil
	c.mu.Unlock()
	if len(t) == 0 {
		return
	}
	req := b.rw.req
	if req.Trailer == nil {
		req.Trailer = make(http.Header, len(t))
	}
	for k, v := range t {
		req.Trailer[k] = v
	}
}

func (b *requestBody) Close() error {
	c := b.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.discardBody(b.s)
	return nil
}

// discardBody stops delivering request DATA to the handler and returns
// what was buffered to the connection window.
func (c *conn) discardBody(s *stream) {
	s.bodyClosed = true
	c.creditConn(int64(s.rbuf.reset()))
	signal(s.rwake)
}

package h1

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// net/http resolves a request carrying both Content-Length and
// Transfer-Encoding the lenient way RFC 9112 §6.1 allows (Transfer-Encoding
// wins, Content-Length is dropped) and leaves no trace of it in the
// Request. Such a request is the classic smuggling probe, and a proxy
// ought to refuse it, so Watch reads along with net/http: it follows the
// message framing of the bytes the client sends and notes, for each
// request head, whether it had both fields. Conflict tells the handler.
//
// The framing follows RFC 9112 §6.3 far enough to find each head: a
// Content-Length body, a chunked body (§7.1) and no body. Anything it does
// not follow (CONNECT, an Upgrade, the HTTP/2 preface, a head past the
// size limit, an unknown transfer coding) ends the watch: net/http then
// either turns the connection into a tunnel or refuses and closes it.

// Watch returns c wrapped so that Conflict can answer for the requests
// read from it. Use it for HTTP/1.1 connections only: it hides *tls.Conn,
// which net/http needs to see for ALPN; it passes ConnectionState on.
func Watch(c net.Conn) net.Conn {
	w := &watchedConn{Conn: c}
	if tc, ok := c.(*tls.Conn); ok {
		return &watchedTLSConn{watchedConn: w, tls: tc}
	}
	return w
}

type watchedConn struct {
	net.Conn
	done      atomic.Bool // the framing is no longer followed
	mu        sync.Mutex
	f         framer
	conflicts []bool // one per head seen, oldest first
}

// watchedTLSConn gives net/http the TLS state (r.TLS) of the watched conn.
type watchedTLSConn struct {
	*watchedConn
	tls *tls.Conn
}

func (c *watchedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.done.Load() {
		c.mu.Lock()
		c.f.feed(p[:n], func(conflict bool) { c.conflicts = append(c.conflicts, conflict) })
		c.done.Store(c.f.state == stDone) // h2c, or a tunnel: stop looking
		c.mu.Unlock()
	}
	return n, err
}

// unwrap returns the connection under a watched one (for a hijack: a
// tunnel wants the real TCP or TLS connection).
func unwrap(c net.Conn) net.Conn {
	switch w := c.(type) {
	case *watchedConn:
		return w.Conn
	case *watchedTLSConn:
		return w.Conn
	}
	return c
}

type connKey struct{}

// ConnContext is an http.Server.ConnContext that lets Conflict find the
// watched connection of a request.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Conflict reports whether r's head had both Content-Length and
// Transfer-Encoding. It must be called once for every HTTP/1.1 request
// served from a watched connection, in order (it consumes one head).
func Conflict(r *http.Request) bool {
	var w *watchedConn
	switch c := r.Context().Value(connKey{}).(type) {
	case *watchedConn:
		w = c
	case *watchedTLSConn:
		w = c.watchedConn
	default:
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.conflicts) == 0 {
		return false
	}
	v := w.conflicts[0]
	w.conflicts = w.conflicts[1:]
	return v
}

// framer follows HTTP/1.1 request framing over a byte stream.
type framer struct {
	state     int
	line      []byte
	remaining int64 // body or chunk bytes still to skip
	method    []byte
	cl, te    bool
	teValue   []byte
	clValue   []byte
	upgrade   bool
}

const (
	stHead = iota
	stBody
	stChunkSize
	stChunkData
	stChunkEnd
	stTrailer
	stDone

	maxLine = 64 << 10
)

func (f *framer) feed(p []byte, head func(conflict bool)) {
	for len(p) > 0 && f.state != stDone {
		switch f.state {
		case stBody, stChunkData:
			n := int64(len(p))
			if n > f.remaining {
				n = f.remaining
			}
			p = p[n:]
			if f.remaining -= n; f.remaining == 0 {
				if f.state == stBody {
					f.state = stHead
				} else {
					f.state = stChunkEnd
				}
			}
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				f.line = append(f.line, p...)
				p = nil
				if len(f.line) > maxLine {
					f.state = stDone
				}
				continue
			}
			line := bytes.TrimSuffix(append(f.line, p[:i]...), []byte("\r"))
			p = p[i+1:]
			f.line = f.line[:0]
			f.onLine(line, head)
		}
	}
}

func (f *framer) onLine(line []byte, head func(bool)) {
	switch f.state {
	case stHead:
		f.headLine(line, head)
	case stChunkSize:
		size, _, _ := bytes.Cut(line, []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		switch {
		case err != nil || n < 0:
			f.state = stDone // net/http refuses and closes
		case n == 0:
			f.state = stTrailer
		default:
			f.remaining, f.state = n, stChunkData
		}
	case stChunkEnd:
		f.state = stChunkSize
	case stTrailer:
		if len(line) == 0 {
			f.state = stHead
		}
	}
}

func (f *framer) headLine(line []byte, head func(bool)) {
	if f.method == nil {
		if len(line) == 0 {
			return // RFC 9112 §2.2: empty lines before a request line
		}
		method, _, _ := bytes.Cut(line, []byte(" "))
		f.method = append([]byte{}, method...)
		if string(method) == "PRI" {
			f.state = stDone // the HTTP/2 preface (h2c)
		}
		return
	}
	if len(line) > 0 {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || line[0] == ' ' || line[0] == '\t' {
			return
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			f.cl, f.clValue = true, append(f.clValue[:0], value...)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			f.te, f.teValue = true, append(f.teValue[:0], value...)
		case bytes.EqualFold(name, []byte("Upgrade")):
			f.upgrade = true
		}
		return
	}
	// End of the head.
	head(f.cl && f.te)
	switch {
	case string(f.method) == http.MethodConnect || f.upgrade:
		f.state = stDone // a tunnel may follow
	case f.te:
		codings := bytes.Split(f.teValue, []byte(","))
		if !bytes.EqualFold(bytes.TrimSpace(codings[len(codings)-1]), []byte("chunked")) {
			f.state = stDone // net/http refuses it
		} else {
			f.state = stChunkSize
		}
	case f.cl:
		n, err := strconv.ParseInt(string(f.clValue), 10, 64)
		if err != nil || n < 0 {
			f.state = stDone
		} else if n > 0 {
			f.remaining, f.state = n, stBody
		}
	}
	f.method, f.cl, f.te, f.upgrade = nil, false, false, false
}

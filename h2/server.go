package h2

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Server is the native HTTP/2 server engine (RFC 9113, RFC 8441). One
// Server serves any number of connections; each runs in ServeConn.
type Server struct {
	cfg Config

	mu           sync.Mutex
	conns        map[*conn]struct{}
	shuttingDown bool
}

// NewServer returns a Server with cfg's defaults applied.
func NewServer(cfg Config) *Server {
	return &Server{cfg: cfg.withDefaults(), conns: make(map[*conn]struct{})}
}

// ServeConn serves one HTTP/2 connection (TLS after ALPN "h2", or
// cleartext h2c with prior knowledge) until it closes, calling h for each
// request stream in its own goroutine. It returns nil on a clean close
// (client went away, GOAWAY drain, idle timeout) and the error otherwise.
// It closes c before returning.
func (s *Server) ServeConn(c net.Conn, h http.Handler) error {
	return s.serveConn(c, h, false)
}

// serveConn is ServeConn for a connection whose client preface may
// already have been consumed (net/http's h2c prior-knowledge hand-off).
func (s *Server) serveConn(c net.Conn, h http.Handler, sawPreface bool) error {
	if tc, ok := c.(*tls.Conn); ok && !tc.ConnectionState().HandshakeComplete {
		// Called on a fresh tls.Server conn: finish the handshake first so
		// that requests carry the full ConnectionState.
		ctx, cancel := context.WithTimeout(context.Background(), prefaceTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return err
		}
	}
	cn := newConn(s, c, h, sawPreface)
	cn.queueSettings() // the server preface goes before any GOAWAY
	s.mu.Lock()
	if s.shuttingDown {
		cn.mu.Lock()
		cn.goAwayLocked(http2.ErrCodeNo)
		cn.mu.Unlock()
	}
	s.conns[cn] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, cn)
		s.mu.Unlock()
	}()
	return cn.serve()
}

// goAwayAll starts a graceful drain on every connection and makes new
// connections go away at once. It does not wait.
func (s *Server) goAwayAll() {
	s.mu.Lock()
	s.shuttingDown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.startDrainLocked()
		c.mu.Unlock()
	}
}

// Shutdown drains every connection gracefully (RFC 9113 §6.8: GOAWAY with
// 2^31-1, then GOAWAY with the last stream id), lets open streams finish
// and returns once all connections are closed. When ctx is done first it
// closes the remaining connections and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.goAwayAll()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
}

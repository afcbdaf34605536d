package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/h2proxy/h2proxy/h1"
	"github.com/h2proxy/h2proxy/tunnel"
)

// tlsListener accepts TCP connections and runs each TLS handshake in a
// goroutine of its own, bounded by a timeout, handing out only connections
// whose handshake succeeded. A slow or failing client never blocks Accept,
// and every handshake failure is counted and logged in one place.
type tlsListener struct {
	inner   net.Listener
	cfg     *tls.Config
	timeout time.Duration
	onFail  func(net.Conn, error)
	onReady func(*tls.Conn)

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	// acceptErr is why the accept loop stopped, when it was the first to
	// close; set before done is closed, so Accept reads it after <-done.
	acceptErr error
}

func newTLSListener(inner net.Listener, cfg *tls.Config, timeout time.Duration, onReady func(*tls.Conn), onFail func(net.Conn, error)) *tlsListener {
	l := &tlsListener{inner: inner, cfg: cfg, timeout: timeout, onReady: onReady, onFail: onFail,
		conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.closeWith(err)
			return
		}
		go l.handshake(c)
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	// BatchConn lets the HTTP/2 writer send a batch of TLS records with
	// one system call.
	tc := tls.Server(tunnel.NewBatchConn(c), l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		l.onFail(c, err)
		c.Close()
		return
	}
	l.onReady(tc)
	var c2 net.Conn = tc
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		c2 = h1.Watch(tc) // HTTP/1.1: watch request framing (smuggling)
	}
	select {
	case l.conns <- c2:
	case <-l.done:
		tc.Close()
	}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		if l.acceptErr != nil {
			return nil, l.acceptErr
		}
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error { return l.closeWith(nil) }

// closeWith closes the listener once, recording why the accept loop
// stopped (nil for Close). A drain closes the socket and then, through
// net/http, the listener: both ends race to get here.
func (l *tlsListener) closeWith(acceptErr error) error {
	var err error
	l.closeOnce.Do(func() {
		l.acceptErr = acceptErr
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

// watchListener hands out cleartext connections watched for HTTP/1.1
// request framing (see h1.Watch); h2c connections pass through it.
type watchListener struct{ net.Listener }

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return h1.Watch(c), nil
}

// withProxyProtocol makes ln read a PROXY protocol v1 or v2 header (as sent
// by load balancers) from every connection, so RemoteAddr is the real
// client. Only connections from trusted ranges are accepted, and they must
// send the header; others are closed at once, so nobody can spoof a client
// address.
func withProxyProtocol(ln net.Listener, trusted []string, timeout time.Duration) (net.Listener, error) {
	policy, err := proxyproto.TrustProxyHeaderFromRanges(trusted)
	if err != nil {
		return nil, err
	}
	return &proxyproto.Listener{Listener: ln, ConnPolicy: policy, ReadHeaderTimeout: timeout}, nil
}

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/h2proxy/h2proxy/tunnel"
)

// dialer dials targets for tunnels and forwarding. The destination policy
// runs in the socket's Control hook, i.e. on the resolved address right
// before connect(2): a name that resolves to a denied address is refused
// and nothing is sent to it, whatever DNS answered earlier (no rebinding
// window between check and use).
type dialer struct {
	policy   func(context.Context) *Policy
	self     func(netip.AddrPort) bool // the proxy's own listening addresses
	timeout  time.Duration
	resolver *net.Resolver
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	policy := d.policy(ctx)
	name, port, _ := net.SplitHostPort(addr)
	if isLocalhost(name) {
		addr = net.JoinHostPort(loopback.String(), port) // RFC 6761 §6.3: no lookup
	}
	nd := net.Dialer{
		Timeout:   d.timeout,
		KeepAlive: 30 * time.Second,
		Resolver:  d.resolver,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return errBadRequest("cannot check address " + address)
			}
			if d.self(ap) {
				return &Error{Status: http.StatusLoopDetected, Type: "proxy_loop_detected", Detail: "the destination is this proxy"}
			}
			if e := policy.checkIP(ap.Addr(), name); e != nil {
				return e
			}
			return nil
		},
	}
	return nd.DialContext(ctx, network, addr)
}

// dial checks t's port and, for an IP literal, its address (so a refusal
// needs no DNS lookup), then dials.
func (d *dialer) dial(ctx context.Context, t target) (net.Conn, error) {
	if e := d.policy(ctx).precheck(t); e != nil {
		return nil, e
	}
	return d.DialContext(ctx, "tcp", t.authority())
}

// dialTLS dials t and runs a TLS handshake with it (wss://, https://).
func (d *dialer) dialTLS(ctx context.Context, t target, base *tls.Config, alpn []string) (*tls.Conn, error) {
	c, err := d.dial(ctx, t)
	if err != nil {
		return nil, err
	}
	cfg := base.Clone()
	cfg.ServerName = t.host
	cfg.NextProtos = alpn
	// Under a BatchConn, a tunnel reading this connection waits for the
	// origin holding no copy buffer (see tunnel.BatchConn).
	tc := tls.Client(tunnel.NewBatchConn(c), cfg)
	hctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		typ := "tls_protocol_error"
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			typ = "tls_certificate_error" // RFC 9209 §2.3.14
		}
		return nil, &Error{Status: http.StatusBadGateway, Type: typ, Detail: t.host, Err: err}
	}
	return tc, nil
}

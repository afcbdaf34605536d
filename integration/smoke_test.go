package integration

import (
	"crypto/tls"
	"testing"
)

func TestProxyStartsAndNegotiatesH2(t *testing.T) {
	p := StartProxy(t)
	for _, proto := range []string{"h2", "http/1.1"} {
		c, err := tls.Dial("tcp", p.Addr, p.TLSConfig(proto))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().NegotiatedProtocol; got != proto {
			t.Errorf("ALPN = %q, want %q", got, proto)
		}
		c.Close()
	}
}

package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// TestTLSListenerClose closes the listener while its accept loop meets
// the closed socket, as a drain does (Drain closes the socket, and
// net/http's Shutdown the listener): Accept must report the close, and
// under the race detector the loop's record of why it stopped must not
// race with Accept's reading it.
func TestTLSListenerClose(t *testing.T) {
	for range 50 {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := newTLSListener(inner, &tls.Config{}, time.Second, func(*tls.Conn) {}, func(net.Conn, error) {})
		go inner.Close()
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Close: %v", err)
		}
		for range 2 {
			if c, err := l.Accept(); err == nil {
				c.Close()
				t.Fatal("Accept after Close returned a connection")
			}
		}
	}
}

package proxy

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Listeners are added while others already serve requests, which look the
// proxy's own names up: both must be safe together.
func TestOwnNamesConcurrent(t *testing.T) {
	o := newOwnNames()
	o.addName("Proxy.Example.")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for port := 1; port <= 2000; port++ {
			o.add(&net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(port%250+1)), Port: 10000 + port})
		}
	}()
	go func() {
		defer wg.Done()
		for range 2000 {
			o.match("proxy.example:12000")
			o.self(netip.MustParseAddrPort("127.0.0.1:10001"))
			o.hasPort("10002")
		}
	}()
	wg.Wait()

	if !o.match("proxy.example:12000") || !o.match("PROXY.example.") {
		t.Error("a configured name on one of our ports is not ours")
	}
	// Port 10001 listens on 127.0.0.2 (see above).
	if !o.self(netip.MustParseAddrPort("127.0.0.2:10001")) || !o.self(netip.MustParseAddrPort("[::ffff:127.0.0.2]:10001")) {
		t.Error("a listening address is not ours")
	}
	if o.self(netip.MustParseAddrPort("127.0.0.1:9999")) || o.match("other.example:10001") {
		t.Error("a foreign port or name is taken for ours")
	}
}

// A listener takes connections to its own address only, a wildcard one to
// every local address; connecting to the unspecified address reaches the
// loopback one.
func TestOwnAddresses(t *testing.T) {
	o := newOwnNames()
	o.add(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443})
	o.add(&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080})
	for addr, want := range map[string]bool{
		"127.0.0.1:8443":          true,
		"[::ffff:127.0.0.1]:8443": true,
		"0.0.0.0:8443":            true,
		"127.0.0.2:8443":          false, // another loopback address: another server
		"[::1]:8443":              false,
		"127.0.0.7:8080":          true, // wildcard
		"[::1]:8080":              true,
		"[::]:8080":               true,
		"192.0.2.1:8080":          false, // not an address of this host
		"127.0.0.1:9999":          false,
	} {
		if got := o.self(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("self(%s) = %v, want %v", addr, got, want)
		}
	}
}

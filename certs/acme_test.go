package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// testZone is resolved to 127.0.0.1 by the test's own DNS server, so that
// Pebble's validator reaches our listeners and nothing leaves loopback.
const testZone = "h2proxy.test."

// pebble is an ACME server (Pebble's WFE, CA and VA) in the test process.
type pebble struct {
	directory string         // ACME directory URL
	tlsRoots  *x509.CertPool // verify the directory's HTTPS certificate
	issuer    *x509.CertPool // Pebble's root: verifies the certificates it issues
}

// startPebble starts Pebble on 127.0.0.1 with its validator checking
// HTTP-01 on httpPort and TLS-ALPN-01 on tlsPort of 127.0.0.1.
func startPebble(t *testing.T, httpPort, tlsPort int, logw io.Writer) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s pause before validating
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberate badNonce errors
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order is validated for real
	logger := log.New(logw, "pebble ", 0)
	store := db.NewMemoryStore()
	// ECDSA: Pebble's default RSA chain costs seconds of key generation.
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewUnstartedServer(front.Handler())
	srv.Config.ErrorLog = log.New(logw, "pebble http ", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	p := &pebble{directory: srv.URL + wfe.DirectoryPath, tlsRoots: x509.NewCertPool(), issuer: x509.NewCertPool()}
	p.tlsRoots.AddCert(srv.Certificate())
	p.issuer.AddCert(authority.GetRootCert(0).Cert)
	return p
}

// startDNS answers A queries under testZone with 127.0.0.1 over TCP (the
// transport Pebble's resolver uses) and everything else with nothing.
func startDNS(t *testing.T) string {
	t.Helper()
	ln := listenLoopback(t)
	started := make(chan struct{})
	srv := &dns.Server{
		Listener:          ln,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
			resp := new(dns.Msg)
			resp.SetReply(req)
			for _, q := range req.Question {
				if q.Qtype == dns.TypeA && dns.IsSubDomain(testZone, q.Name) {
					resp.Answer = append(resp.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			_ = w.WriteMsg(resp)
		}),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("DNS server: %v", err)
	}
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return ln.Addr().String()
}

func port(t *testing.T, ln net.Listener) int {
	t.Helper()
	return ln.Addr().(*net.TCPAddr).Port
}

// obtain runs the manager until it holds a certificate for every domain.
func obtain(t *testing.T, m *ACMEManager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Manage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// checkServed handshakes with addr for domain and checks that the leaf
// was issued by Pebble for domain; it returns the leaf.
func checkServed(t *testing.T, p *pebble, addr, domain string) *x509.Certificate {
	t.Helper()
	chain := handshake(t, addr, domain)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: p.issuer, Intermediates: inter}); err != nil {
		t.Fatalf("served leaf (subject %q, issuer %q) is not Pebble's for %s: %v",
			chain[0].Subject, chain[0].Issuer, domain, err)
	}
	return chain[0]
}

// proxyTLSConfig does what the proxy must do with TLSConfig: add its own
// protocols after acme-tls/1. Without them, a client offering h2 gets
// "no application protocol".
func proxyTLSConfig(m *ACMEManager) *tls.Config {
	tc := m.TLSConfig()
	tc.NextProtos = append(tc.NextProtos, "h2", "http/1.1")
	return tc
}

func TestACMETLSALPN(t *testing.T) {
	const domain = "alpn.h2proxy.test"
	logger, logs := testLogger(t)
	tlsLn := listenLoopback(t)
	// Nothing listens on Pebble's HTTP port: only TLS-ALPN-01 can succeed.
	p := startPebble(t, 1, port(t, tlsLn), logs)
	dataDir := t.TempDir()
	cfg := ACMEConfig{
		Domains:      []string{domain},
		Email:        "ops@h2proxy.test",
		CA:           p.directory,
		DataDir:      dataDir,
		TrustedRoots: p.tlsRoots,
		TLSAddr:      tlsLn.Addr().String(),
		Logger:       logger,
	}
	m, err := NewACME(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	if np := m.TLSConfig().NextProtos; len(np) != 1 || np[0] != "acme-tls/1" {
		t.Fatalf("NextProtos = %q, want [acme-tls/1]", np)
	}
	serveTLS(t, tlsLn, proxyTLSConfig(m))

	obtain(t, m)
	leaf := checkServed(t, p, tlsLn.Addr().String(), domain)
	if exp := m.Expiry()[domain]; !exp.Equal(leaf.NotAfter) {
		t.Errorf("Expiry()[%s] = %v, want the served leaf's %v", domain, exp, leaf.NotAfter)
	}
	if !strings.Contains(logs.String(), " challenge=tls-alpn-01") {
		t.Errorf("no TLS-ALPN-01 challenge was served (logs:\n%s)", logs.String())
	}
	m.Stop()

	// A restart finds the certificate under DataDir instead of ordering a
	// new one: same serial.
	m2, err := NewACME(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Stop()
	obtain(t, m2)
	ln2 := listenLoopback(t)
	serveTLS(t, ln2, proxyTLSConfig(m2))
	if again := checkServed(t, p, ln2.Addr().String(), domain); again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after a restart: serial %v, want the stored %v", again.SerialNumber, leaf.SerialNumber)
	}
}

func TestACMEHTTP01(t *testing.T) {
	const domain = "http.h2proxy.test"
	logger, logs := testLogger(t)
	httpLn := listenLoopback(t)
	// Nothing listens on Pebble's TLS port: only HTTP-01 can succeed.
	p := startPebble(t, port(t, httpLn), 1, logs)
	m, err := NewACME(ACMEConfig{
		Domains:      []string{domain},
		Email:        "ops@h2proxy.test",
		CA:           p.directory,
		DataDir:      t.TempDir(),
		TrustedRoots: p.tlsRoots,
		HTTPAddr:     httpLn.Addr().String(),
		Logger:       logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := &http.Server{Handler: m.HTTPChallengeHandler(next), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(httpLn) }()
	defer func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("HTTP server: %v", err)
		}
	}()

	obtain(t, m)
	if !strings.Contains(logs.String(), " challenge=http-01") {
		t.Errorf("no HTTP-01 challenge was served (logs:\n%s)", logs.String())
	}
	tlsLn := listenLoopback(t)
	serveTLS(t, tlsLn, proxyTLSConfig(m))
	checkServed(t, p, tlsLn.Addr().String(), domain)

	// Requests that are not challenges reach the wrapped handler; so do
	// proxied ones (absolute-form), even with a challenge-like path.
	base := "http://" + httpLn.Addr().String()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	checkStatus(t, client, base+"/", http.StatusTeapot)
	proxyURL, _ := url.Parse(base)
	proxied := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer proxied.CloseIdleConnections()
	checkStatus(t, proxied, "http://"+domain+"/.well-known/acme-challenge/abc", http.StatusTeapot)
}

func checkStatus(t *testing.T, c *http.Client, u string, want int) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Errorf("GET %s: %d, want %d", u, resp.StatusCode, want)
	}
}

func TestNewACMEChecksConfig(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]ACMEConfig{
		"no domains":   {DataDir: dir, TLSAddr: "127.0.0.1:8443"},
		"wildcard":     {Domains: []string{"*.h2proxy.test"}, DataDir: dir, TLSAddr: "127.0.0.1:8443"},
		"no data dir":  {Domains: []string{"a.h2proxy.test"}, TLSAddr: "127.0.0.1:8443"},
		"no listener":  {Domains: []string{"a.h2proxy.test"}, DataDir: dir},
		"port zero":    {Domains: []string{"a.h2proxy.test"}, DataDir: dir, TLSAddr: "127.0.0.1:0"},
		"empty domain": {Domains: []string{"a.h2proxy.test", " "}, DataDir: dir, TLSAddr: ":443"},
	} {
		if m, err := NewACME(cfg); err == nil {
			m.Stop()
			t.Errorf("%s: no error", name)
		}
	}
	m, err := NewACME(ACMEConfig{Domains: []string{"B.h2proxy.test.", "a.h2proxy.test", "b.h2proxy.test"}, DataDir: dir, TLSAddr: ":" + strconv.Itoa(8443)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	if got := strings.Join(m.Domains(), ","); got != "b.h2proxy.test,a.h2proxy.test" {
		t.Errorf("Domains() = %s", got)
	}
	if len(m.Expiry()) != 0 {
		t.Errorf("Expiry() before Manage = %v, want empty", m.Expiry())
	}
}

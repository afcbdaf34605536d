package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = certmagic.LetsEncryptProductionCA

// ACMEConfig configures certificates obtained from an ACME CA (RFC 8555).
// Using it means accepting the CA's terms of service: h2proxy runs
// unattended, so nobody is asked.
type ACMEConfig struct {
	// Domains are the names to obtain certificates for (one certificate
	// per name). Required. Wildcards need DNS-01, which h2proxy does not
	// do, and are refused.
	Domains []string

	// Email is the ACME account contact, used by the CA for expiry and
	// policy notices. Optional (and recommended).
	Email string

	// CA is the ACME directory URL. Default LetsEncryptProduction (with
	// Let's Encrypt staging used for retries after a failure, as
	// certmagic does, to spare the production rate limits).
	CA string

	// DataDir holds the account key, certificates and locks, under
	// DataDir/acme. Required: without it every restart would order new
	// certificates and soon hit the CA's rate limits.
	DataDir string

	// TrustedRoots verify the ACME server's TLS certificate. Default: the
	// system roots. Set it for a private CA or a test server.
	TrustedRoots *x509.CertPool

	// TLSAddr is the bound address (host:port, not ":0") of the TLS
	// listener that serves TLSConfig; TLS-ALPN-01 challenges are answered
	// there (RFC 8737). The CA connects to port 443 of each domain, so
	// this listener must be reachable there, directly or forwarded.
	// Empty disables TLS-ALPN-01.
	TLSAddr string

	// HTTPAddr is the bound address of a plain-HTTP listener whose handler
	// is wrapped by HTTPChallengeHandler; HTTP-01 challenges are answered
	// there (RFC 8555 §8.3). The CA connects to port 80. Empty disables
	// HTTP-01. At least one of TLSAddr and HTTPAddr is required.
	HTTPAddr string

	// Logger receives certmagic's logs (issuance, renewals, challenge
	// requests). Default: none.
	Logger *slog.Logger

	// RenewCheckInterval is how often the background maintenance looks
	// for certificates to renew. Default certmagic's 10 minutes.
	RenewCheckInterval time.Duration
}

// ACMEManager obtains and renews certificates for the configured domains
// and serves them, and the ACME challenges, on h2proxy's own listeners.
type ACMEManager struct {
	domains []string
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	cache   *certmagic.Cache

	mu       sync.Mutex
	failures map[string]error // last failed attempt per domain, for WaitReady
	cancels  []context.CancelFunc
	stopped  bool
}

// ACME is NewACME followed by Manage: call it once the listeners named in
// cfg are bound (see Manage for why).
func ACME(ctx context.Context, cfg ACMEConfig) (*ACMEManager, error) {
	m, err := NewACME(cfg)
	if err != nil {
		return nil, err
	}
	if err := m.Manage(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// NewACME checks cfg and prepares the manager without contacting the CA.
// It starts certmagic's maintenance goroutine: call Stop when done.
func NewACME(cfg ACMEConfig) (*ACMEManager, error) {
	domains, err := normalizeDomains(cfg.Domains)
	if err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, errors.New("acme: a data directory is required")
	}
	tlsHost, tlsPort, err := challengeAddr("TLS", cfg.TLSAddr)
	if err != nil {
		return nil, err
	}
	httpHost, httpPort, err := challengeAddr("HTTP", cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	if tlsPort == 0 && httpPort == 0 {
		return nil, errors.New("acme: no listener to answer challenges on (need the TLS or the HTTP listener's address)")
	}
	// certmagic's solvers first try to bind ListenHost:port. Finding it
	// taken and connectable, they assume (rightly) that our listener
	// serves the challenge from certmagic's in-process challenge memory.
	// ListenHost must therefore be our listener's host: with another host
	// the bind could succeed and certmagic would run a second server.
	// There is only one ListenHost; the TLS listener's wins.
	listenHost := tlsHost
	if tlsPort == 0 {
		listenHost = httpHost
	}
	dir := filepath.Join(cfg.DataDir, "acme")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: data directory: %w", err)
	}
	ca := cfg.CA
	if ca == "" {
		ca = LetsEncryptProduction
	}
	logger := zapToSlog(cfg.Logger)

	m := &ACMEManager{domains: domains, failures: make(map[string]error)}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		// Every certificate in this cache is ours and managed the same way.
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: cfg.RenewCheckInterval,
		Logger:             logger.Named("cache"),
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: dir},
		Logger:  logger,
		// Clients that send no SNI (an IP address as proxy host) still
		// get a certificate, the first domain's.
		DefaultServerName: domains[0],
		OnEvent:           m.onEvent,
		// Without this certmagic builds event data on every handshake.
		ShouldEmitFunc: func(event string) bool { return event == "cert_failed" || event == "cert_obtained" },
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      ca,
		Email:                   cfg.Email,
		Agreed:                  true, // never prompt on stdin
		DisableHTTPChallenge:    httpPort == 0,
		DisableTLSALPNChallenge: tlsPort == 0,
		ListenHost:              listenHost,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          tlsPort,
		TrustedRoots:            cfg.TrustedRoots,
		Logger:                  logger.Named("acme"),
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

// Manage loads certificates from DataDir and, in the background, obtains
// missing ones and renews them until Stop (or until ctx ends). It does not
// wait for issuance: handshakes for a domain fail until its certificate
// arrives (WaitReady waits). Call it after the listeners named in the
// config are bound, or certmagic would bind those ports itself.
func (m *ACMEManager) Manage(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		cancel()
		return errors.New("acme: manager stopped")
	}
	m.cancels = append(m.cancels, cancel)
	m.mu.Unlock()
	// Async, not ManageSync: certmagic treats a synchronous call as
	// interactive (it may prompt on stdin, and does not retry).
	return m.magic.ManageAsync(ctx, m.domains)
}

// WaitReady waits until every domain has a certificate. When ctx ends
// first, the error names the domains still missing and the CA's last
// answer for each.
func (m *ACMEManager) WaitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		exp := m.Expiry()
		var missing []string
		for _, d := range m.domains {
			if _, ok := exp[d]; !ok {
				missing = append(missing, d)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			m.mu.Lock()
			var errs []error
			for _, d := range missing {
				if err := m.failures[d]; err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", d, err))
				}
			}
			m.mu.Unlock()
			return fmt.Errorf("acme: no certificate for %s: %w", strings.Join(missing, ", "), errors.Join(append([]error{ctx.Err()}, errs...)...))
		}
	}
}

// TLSConfig serves the managed certificates and answers TLS-ALPN-01
// challenges (RFC 8737). NextProtos holds "acme-tls/1"; the caller must
// keep it and append its own ("h2", "http/1.1"): Go refuses a handshake
// whose ALPN offer shares nothing with NextProtos, so dropping acme-tls/1
// fails validation, and not adding h2 fails every browser. Browsers never
// offer acme-tls/1; a connection that negotiated it has done its job once
// the handshake completes and can be closed unread.
func (m *ACMEManager) TLSConfig() *tls.Config {
	tc := m.magic.TLSConfig()
	tc.MinVersion = tls.VersionTLS12
	return tc
}

// HTTPChallengeHandler answers HTTP-01 challenge requests
// (GET /.well-known/acme-challenge/TOKEN for one of our domains) and
// passes everything else to next. Proxied requests (absolute-form, or
// CONNECT) always go to next: they are addressed to another host.
func (m *ACMEManager) HTTPChallengeHandler(next http.Handler) http.Handler {
	solve := m.issuer.HTTPChallengeHandler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect || r.URL.IsAbs() {
			next.ServeHTTP(w, r)
			return
		}
		solve.ServeHTTP(w, r)
	})
}

// Domains are the managed names, lower-cased, in the order given.
func (m *ACMEManager) Domains() []string { return append([]string(nil), m.domains...) }

// Expiry maps each domain that has a certificate to its NotAfter (the
// latest, if several are cached during a renewal).
func (m *ACMEManager) Expiry() map[string]time.Time {
	out := make(map[string]time.Time, len(m.domains))
	for _, d := range m.domains {
		for _, c := range m.cache.AllMatchingCertificates(d) {
			leaf := c.Leaf
			if leaf == nil && len(c.Certificate.Certificate) > 0 {
				leaf, _ = x509.ParseCertificate(c.Certificate.Certificate[0])
			}
			if leaf != nil && leaf.NotAfter.After(out[d]) {
				out[d] = leaf.NotAfter
			}
		}
	}
	return out
}

// Stop ends management: obtain and renew jobs are cancelled and the
// maintenance goroutine exits. Certificates already cached are still
// served by TLSConfig. Stop may be called more than once.
func (m *ACMEManager) Stop() {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.stopped = true
	cancels := m.cancels
	m.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
	m.cache.Stop()
}

// onEvent remembers the last failure per domain so WaitReady can say why
// a certificate is missing; certmagic logs the details itself.
func (m *ACMEManager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch event {
	case "cert_failed":
		if err, ok := data["error"].(error); ok {
			m.failures[name] = err
		}
	case "cert_obtained":
		delete(m.failures, name)
	}
	return nil
}

func normalizeDomains(in []string) ([]string, error) {
	seen := make(map[string]bool)
	var out []string
	for _, d := range in {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		switch {
		case d == "":
			return nil, errors.New("acme: empty domain name")
		case strings.Contains(d, "*"):
			return nil, fmt.Errorf("acme: %s: wildcard certificates need the DNS-01 challenge, which h2proxy does not do", d)
		case net.ParseIP(d) == nil && strings.ContainsAny(d, "/: "):
			return nil, fmt.Errorf("acme: %q is not a domain name", d)
		case seen[d]:
			continue
		}
		seen[d] = true
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, errors.New("acme: no domains")
	}
	return out, nil
}

// challengeAddr splits a bound listener address; "" means none.
func challengeAddr(what, addr string) (host string, port int, err error) {
	if addr == "" {
		return "", 0, nil
	}
	host, p, err := net.SplitHostPort(addr)
	if err == nil {
		port, err = strconv.Atoi(p)
	}
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("acme: %s listener address %q: want the bound host:port", what, addr)
	}
	return host, port, nil
}

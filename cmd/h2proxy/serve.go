package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/h2proxy/h2proxy/certs"
	"github.com/h2proxy/h2proxy/h2"
	"github.com/h2proxy/h2proxy/proxy"
)

// live are the options a SIGHUP reload applies without a restart.
var live = map[string]bool{"allow-private": true, "allow-ports": true, "allow-dest": true, "deny-dest": true,
	"users": true, "auth-file": true, "cert": true, "key": true, "log-level": true, "drain-timeout": true}

func serve(args []string, o *options, log zerolog.Logger, stderr io.Writer) error {
	zerolog.SetGlobalLevel(mustLevel(o.logLevel))
	log = log.Level(zerolog.TraceLevel) // the global level filters, so reloads can change it

	certSrc, ca, err := loadCertificates(o)
	if err != nil {
		return err
	}
	var current atomic.Pointer[tls.Config]
	current.Store(certSrc)
	cfg := proxy.Config{
		Logger: &log,
		// The certificate source can be swapped by a reload; every new
		// handshake asks for the one in force.
		TLSConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return current.Load(), nil },
		},
		CertExpiry:          func() time.Time { return certExpiry(current.Load()) },
		ProxyProtocol:       o.proxyProtocol,
		TrustedProxies:      o.trustedList(),
		ProbeResistance:     o.probeResistance,
		ProbeDomain:         o.probeDomain,
		MaxTunnelsPerClient: o.maxTunnelsPerClient,
		TunnelIdleTimeout:   o.idleTimeout,
		ReadHeaderTimeout:   o.headerTimeout,
		DialTimeout:         o.dialTimeout,
		MaxHeaderBytes:      o.maxHeaderBytes,
		HTTP2:               h2.Config{MaxConcurrentStreams: o.maxStreams},
	}
	cfg.Policy, cfg.UserPolicies, _ = o.policies() // checked by parseOptions
	if cfg.Users, err = loadUsers(o.authFile); err != nil {
		return err
	}
	if cfg.UpstreamTLS, err = upstreamTLS(o.upstreamCA); err != nil {
		return err
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		return err
	}

	errc := make(chan error, 3)
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	go func() { errc <- srv.Serve(ln) }()
	if o.plainListen != "" {
		pln, err := net.Listen("tcp", o.plainListen)
		if err != nil {
			return fmt.Errorf("--plain-listen: %w", err)
		}
		go func() { errc <- srv.ServePlain(pln) }()
		log.Info().Str("addr", pln.Addr().String()).Msg("listening (cleartext)")
	}
	var admin *http.Server
	if o.adminListen != "" {
		aln, err := net.Listen("tcp", o.adminListen)
		if err != nil {
			return fmt.Errorf("--admin-listen: %w", err)
		}
		admin = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go admin.Serve(aln)
		log.Info().Str("addr", aln.Addr().String()).Msg("admin listening")
	}
	logListening(log, ln.Addr(), ca)
	var opts atomic.Pointer[options] // read by the watcher; replaced by reloads
	opts.Store(o)
	stopWatch := watchFile(func() string { return opts.Load().authFile }, func() {
		if u, err := loadUsers(opts.Load().authFile); err != nil {
			log.Error().Err(err).Msg("auth file changed but is invalid; the previous users stay")
		} else {
			srv.SetUsers(u)
			log.Info().Int("users", u.Len()).Msg("auth file reloaded")
		}
	})
	defer stopWatch()

	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for {
		select {
		case err := <-errc:
			return err
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				if n, err := reload(args, o, srv, &current, log, stderr); err != nil {
					log.Error().Err(err).Msg("reload failed; the running configuration stays")
				} else {
					o = n
					opts.Store(n)
				}
				continue
			}
			return drain(srv, admin, o.drainTimeout, sig, sigc, errc, log)
		}
	}
}

// drain stops accepting, lets open work finish until the deadline, and
// returns nil for a clean exit. A second signal exits at once.
func drain(srv *proxy.Server, admin *http.Server, timeout time.Duration, sig os.Signal, sigc chan os.Signal, errc chan error, log zerolog.Logger) error {
	log.Info().Str("signal", sig.String()).Dur("drain_timeout", timeout).Msg("draining")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		for s := range sigc {
			if s != syscall.SIGHUP {
				log.Warn().Str("signal", s.String()).Msg("second signal: exiting now")
				os.Exit(1)
			}
		}
	}()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if admin != nil {
		admin.Close()
	}
	log.Info().Msg("stopped")
	return nil
}

// reload re-reads the command line and config file. Settings that can
// change live are applied; others are reported as needing a restart. An
// invalid configuration changes nothing.
func reload(args []string, old *options, srv *proxy.Server, current *atomic.Pointer[tls.Config], log zerolog.Logger, stderr io.Writer) (*options, error) {
	n, err := parseOptions(args, stderr)
	if err != nil {
		return nil, err
	}
	changed := old.changed(n)
	var restart []string
	for _, name := range changed {
		if !live[name] {
			restart = append(restart, name)
		}
	}
	// Certificates are re-read even when the paths are unchanged: the
	// files may have been replaced (renewed) in place.
	certSrc, _, err := loadCertificates(n)
	if err != nil {
		return nil, err
	}
	users, err := loadUsers(n.authFile)
	if err != nil {
		return nil, err
	}
	current.Store(certSrc)
	global, perUser, _ := n.policies()
	srv.SetPolicy(global, perUser)
	srv.SetUsers(users)
	zerolog.SetGlobalLevel(mustLevel(n.logLevel))
	ev := log.Info().Strs("changed", changed)
	if len(restart) > 0 {
		ev = ev.Strs("needs_restart", restart)
	}
	ev.Msg("configuration reloaded")
	return n, nil
}

func mustLevel(s string) zerolog.Level {
	l, _ := zerolog.ParseLevel(s)
	return l
}

// loadUsers reads the htpasswd file; no file means no authentication.
func loadUsers(path string) (*proxy.Users, error) {
	if path == "" {
		return nil, nil
	}
	u, err := proxy.LoadUsers(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-file: %w", err)
	}
	return u, nil
}

// loadCertificates returns the TLS config serving the proxy's certificate:
// static files when --cert/--key are given, else the local CA.
func loadCertificates(o *options) (*tls.Config, *certs.LocalCA, error) {
	if o.certFile != "" {
		cfg, err := certs.Files(o.certFile, o.keyFile)
		return cfg, nil, err
	}
	ca, err := certs.LoadOrCreateCA(o.dataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("--data-dir: %w", err)
	}
	cfg, err := ca.TLSConfig(localNames())
	return cfg, ca, err
}

// certExpiry reports when the certificate served for localhost expires.
func certExpiry(cfg *tls.Config) time.Time {
	var cert *tls.Certificate
	if cfg.GetCertificate != nil {
		cert, _ = cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"})
	} else if len(cfg.Certificates) > 0 {
		cert = &cfg.Certificates[0]
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return time.Time{}
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return time.Time{}
	}
	return leaf.NotAfter
}

func upstreamTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--upstream-ca: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--upstream-ca %s: no PEM certificate found", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

func logListening(log zerolog.Logger, addr net.Addr, ca *certs.LocalCA) {
	ev := log.Info().Str("addr", addr.String())
	if ca != nil {
		port := addr.(*net.TCPAddr).Port
		ev = ev.Str("ca", ca.CertPath).
			Str("chrome", fmt.Sprintf("chromium --proxy-server=https://localhost:%d --ignore-certificate-errors-spki-list=%s", port, ca.SPKIHash()))
	}
	ev.Msg("listening")
}

// localNames are the names the local CA's certificate covers.
func localNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" && !strings.EqualFold(h, "localhost") {
		names = append(names, h)
	}
	return names
}

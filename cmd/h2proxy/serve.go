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

// live are the settings a SIGHUP reload applies without a restart.
var live = map[string]bool{"route": true, "allow-private": true, "allow-ports": true, "allow-dest": true, "deny-dest": true,
	"users": true, "auth-file": true, "cert": true, "key": true, "log-level": true, "drain-timeout": true}

// listeners are the bound sockets, opened before anything else so that
// ACME challenges can be answered on them and port errors come first.
type listeners struct {
	tls, plain, admin net.Listener
}

func listen(o *options) (*listeners, error) {
	var l listeners
	var err error
	if l.tls, err = net.Listen("tcp", o.listen); err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	if o.plainListen != "" {
		if l.plain, err = net.Listen("tcp", o.plainListen); err != nil {
			l.close()
			return nil, fmt.Errorf("--plain-listen: %w", err)
		}
	}
	if o.adminListen != "" {
		if l.admin, err = net.Listen("tcp", o.adminListen); err != nil {
			l.close()
			return nil, fmt.Errorf("--admin-listen: %w", err)
		}
	}
	return &l, nil
}

func (l *listeners) close() {
	for _, ln := range []net.Listener{l.tls, l.plain, l.admin} {
		if ln != nil {
			ln.Close()
		}
	}
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func serve(args []string, o *options, log zerolog.Logger, stderr io.Writer) error {
	zerolog.SetGlobalLevel(mustLevel(o.logLevel))
	log = log.Level(zerolog.TraceLevel) // the global level filters, so reloads can change it
	// Before anything is announced: a SIGHUP's default action would kill
	// a process that has said it is listening.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	ls, err := listen(o)
	if err != nil {
		return err
	}
	defer ls.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := loadCertificates(ctx, o, addrOf(ls.tls), addrOf(ls.plain), log)
	if err != nil {
		return err
	}
	defer cs.stop()
	srv, err := newServer(o, cs, log)
	if err != nil {
		return err
	}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ls.tls) }()
	if ls.plain != nil {
		go func() { errc <- srv.ServePlain(ls.plain) }()
		log.Info().Str("addr", addrOf(ls.plain)).Msg("listening (cleartext)")
	}
	var admin *http.Server
	if ls.admin != nil {
		admin = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go admin.Serve(ls.admin)
		log.Info().Str("addr", addrOf(ls.admin)).Msg("admin listening")
	}
	logListening(log, ls.tls.Addr(), cs.ca)

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

	for {
		select {
		case err := <-errc:
			return err
		case sig := <-sigc:
			if sig != syscall.SIGHUP {
				return drain(srv, admin, opts.Load().drainTimeout, sig, sigc, log)
			}
			if n, err := reload(args, opts.Load(), srv, cs, log, stderr); err != nil {
				log.Error().Err(err).Msg("reload failed; the running configuration stays")
			} else {
				opts.Store(n)
			}
		}
	}
}

func newServer(o *options, cs *certificates, log zerolog.Logger) (*proxy.Server, error) {
	cfg := proxy.Config{
		Logger:              &log,
		TLSConfig:           cs.tlsConfig(),
		CertExpiry:          cs.expiry,
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
		Names:               o.domains,
	}
	cfg.Routes, _ = o.parsedRoutes() // checked by parseOptions
	if cs.acme != nil {
		cfg.HTTPChallenge = cs.acme.HTTPChallengeHandler
	}
	if o.dnsServer != "" {
		cfg.Resolver = dnsResolver(o.dnsServer)
	}
	cfg.Policy, cfg.UserPolicies, _ = o.policies() // checked by parseOptions
	var err error
	if cfg.Users, err = loadUsers(o.authFile); err != nil {
		return nil, err
	}
	if cfg.UpstreamTLS, err = upstreamTLS(o.upstreamCA); err != nil {
		return nil, err
	}
	return proxy.New(cfg)
}

// drain stops accepting, lets open work finish until the deadline, and
// returns nil for a clean exit. A second signal exits at once.
func drain(srv *proxy.Server, admin *http.Server, timeout time.Duration, sig os.Signal, sigc chan os.Signal, log zerolog.Logger) error {
	srv.Drain()
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
func reload(args []string, old *options, srv *proxy.Server, cs *certificates, log zerolog.Logger, stderr io.Writer) (*options, error) {
	n, err := parseOptions(args, stderr)
	if err != nil {
		return nil, err
	}
	users, err := loadUsers(n.authFile)
	if err != nil {
		return nil, err
	}
	// Certificates go last among the checks: they are swapped in place.
	if err := cs.reload(old, n); err != nil {
		return nil, err
	}
	global, perUser, _ := n.policies()
	srv.SetPolicy(global, perUser)
	routes, _ := n.parsedRoutes()
	srv.SetRoutes(routes)
	srv.SetUsers(users)
	zerolog.SetGlobalLevel(mustLevel(n.logLevel))
	changed := old.changed(n)
	var restart []string
	for _, name := range changed {
		if !live[name] {
			restart = append(restart, name)
		}
	}
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

// dnsResolver sends every lookup to server (Go's own resolver, so the
// system's configuration is bypassed entirely).
func dnsResolver(server string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
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

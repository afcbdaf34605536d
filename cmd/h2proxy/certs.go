package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/h2proxy/h2proxy/certs"
)

// certSource is where the served certificate comes from: ACME, static
// files, or the local CA.
type certSource interface {
	TLSConfig() *tls.Config
	Expiry() map[string]time.Time
}

// localSource serves leaves of the local CA for the machine's names.
type localSource struct {
	*certs.LocalCA
	cfg *tls.Config
}

func (l localSource) TLSConfig() *tls.Config { return l.cfg }

// certificates holds the source in force; a reload may swap it while
// handshakes go on.
type certificates struct {
	cur  atomic.Pointer[certSource]
	cfg  atomic.Pointer[tls.Config]
	ca   *certs.LocalCA     // the local CA, when it is the source
	acme *certs.ACMEManager // the ACME manager, when it is the source
	log  zerolog.Logger
}

func (c *certificates) set(src certSource) {
	c.cur.Store(&src)
	c.cfg.Store(src.TLSConfig())
}

// tlsConfig asks for the current source's config on every handshake.
func (c *certificates) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return c.cfg.Load(), nil },
	}
}

func (c *certificates) expiry() map[string]time.Time { return (*c.cur.Load()).Expiry() }

// load builds the source the options ask for. tlsAddr and httpAddr are the
// bound listeners, where ACME challenges are answered.
func loadCertificates(ctx context.Context, o *options, tlsAddr, httpAddr string, log zerolog.Logger) (*certificates, error) {
	c := &certificates{log: log}
	switch {
	case len(o.domains) > 0:
		m, err := certs.ACME(ctx, certs.ACMEConfig{
			Domains: o.domains, Email: o.acmeEmail, CA: o.acmeCA, DataDir: o.dataDir,
			TLSAddr: tlsAddr, HTTPAddr: httpAddr,
			Logger: slog.New(zerolog.NewSlogHandler(log.With().Str("component", "acme").Logger())),
		})
		if err != nil {
			return nil, fmt.Errorf("--domain: %w", err)
		}
		c.acme = m
		c.set(m)
	case o.certFile != "":
		src, err := c.fileSource(o)
		if err != nil {
			return nil, err
		}
		c.set(src)
	default:
		ca, err := certs.LoadOrCreateCA(o.dataDir)
		if err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		cfg, err := ca.TLSConfig(append(localNames(), o.routeHosts()...))
		if err != nil {
			return nil, err
		}
		c.ca = ca
		c.set(localSource{ca, cfg})
	}
	return c, nil
}

func (c *certificates) fileSource(o *options) (*certs.FileSource, error) {
	src, err := certs.NewFileSource(o.certFile, o.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key: %w", err)
	}
	src.OnReload = func(leaf *x509.Certificate) {
		c.log.Info().Str("serial", leaf.SerialNumber.String()).Time("not_after", leaf.NotAfter).Msg("certificate files reloaded")
	}
	src.OnError = func(err error) {
		c.log.Error().Err(err).Msg("certificate files changed but are invalid; the previous certificate stays")
	}
	return src, nil
}

// reload re-reads static certificate files (a SIGHUP after renewal) or
// switches to other files. ACME renews by itself; the local CA issues a
// new leaf when the route hosts it must cover changed.
func (c *certificates) reload(old, n *options) error {
	if n.certFile == "" {
		if c.ca == nil || slices.Equal(old.routeHosts(), n.routeHosts()) {
			return nil
		}
		cfg, err := c.ca.TLSConfig(append(localNames(), n.routeHosts()...))
		if err != nil {
			return err
		}
		c.set(localSource{c.ca, cfg})
		return nil
	}
	if n.certFile == old.certFile && n.keyFile == old.keyFile {
		if fs, ok := (*c.cur.Load()).(*certs.FileSource); ok {
			return fs.Reload()
		}
	}
	src, err := c.fileSource(n)
	if err != nil {
		return err
	}
	c.set(src)
	return nil
}

func (c *certificates) stop() {
	if c.acme != nil {
		c.acme.Stop()
	}
}

// runTrust prints how to make browsers and tools trust the local CA.
func runTrust(args []string, stdout, stderr io.Writer) error {
	dataDir, err := dataDirFlag("h2proxy trust", args, stderr)
	if err != nil {
		return err
	}
	ca, err := certs.LoadOrCreateCA(dataDir)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, certs.TrustInstructions(ca))
	return err
}

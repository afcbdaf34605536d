// Command h2proxy runs the HTTPS forward proxy.
//
//	h2proxy [flags]            run the proxy (see -help)
//	h2proxy ca [--data-dir D]  print the local CA certificate (PEM)
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/h2proxy/h2proxy/certs"
	"github.com/h2proxy/h2proxy/proxy"
)

func main() {
	reexecWithExtendedConnect()
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "h2proxy:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "ca" {
		return runCA(args[1:], stdout, stderr)
	}
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(opts.logFormat, opts.logLevel, stderr)
	if err != nil {
		return err
	}
	return serve(opts, log)
}

// options are the command-line settings.
type options struct {
	listen       string
	certFile     string
	keyFile      string
	dataDir      string
	allowPrivate bool
	allowPorts   string
	upstreamCA   string
	logFormat    string
	logLevel     string
	drainTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("h2proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", defaultListen(), "address to listen on for TLS (h2 and http/1.1); default :8443, or :$PORT when PORT is set")
	fs.StringVar(&o.certFile, "cert", "", "certificate chain PEM file (with --key) instead of the local CA")
	fs.StringVar(&o.keyFile, "key", "", "private key PEM file (with --cert)")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory for the local CA and other state")
	fs.BoolVar(&o.allowPrivate, "allow-private", false, "allow loopback, private and link-local destinations (development only)")
	fs.StringVar(&o.allowPorts, "allow-ports", proxy.DefaultPorts, "destination ports allowed, e.g. 80,443,1025-65535")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "PEM file of a CA to trust for TLS to origins, beside the system roots")
	fs.StringVar(&o.logFormat, "log-format", "", "json or console (default: console on a terminal, else json)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "how long open tunnels may finish after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: ca)", fs.Arg(0))
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, errors.New("--cert and --key go together: give both or neither")
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return nil, fmt.Errorf("--listen %q: want HOST:PORT or :PORT", o.listen)
	}
	if _, err := proxy.ParsePorts(o.allowPorts); err != nil {
		return nil, fmt.Errorf("--allow-ports: %w", err)
	}
	return o, nil
}

func defaultListen() string {
	if p := os.Getenv("PORT"); p != "" {
		return ":" + p
	}
	return ":8443"
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "h2proxy")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "h2proxy")
	}
	return "h2proxy-data"
}

func newLogger(format, level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "console"
			}
		}
	}
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func serve(o *options, log zerolog.Logger) error {
	cfg := proxy.Config{Logger: &log}
	cfg.Policy.AllowPrivate = o.allowPrivate
	cfg.Policy.Ports, _ = proxy.ParsePorts(o.allowPorts)
	if o.upstreamCA != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(o.upstreamCA)
		if err != nil {
			return fmt.Errorf("--upstream-ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--upstream-ca %s: no PEM certificate found", o.upstreamCA)
		}
		cfg.UpstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}

	var ca *certs.LocalCA
	var err error
	if o.certFile != "" {
		cfg.TLSConfig, err = certs.Files(o.certFile, o.keyFile)
	} else {
		ca, err = certs.LoadOrCreateCA(o.dataDir)
		if err == nil {
			cfg.TLSConfig, err = ca.TLSConfig(localNames())
		}
	}
	if err != nil {
		return err
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	ev := log.Info().Str("addr", ln.Addr().String())
	if ca != nil {
		port := ln.Addr().(*net.TCPAddr).Port
		ev = ev.Str("ca", ca.CertPath).
			Str("chrome", fmt.Sprintf("chromium --proxy-server=https://localhost:%d --ignore-certificate-errors-spki-list=%s", port, ca.SPKIHash()))
	}
	ev.Msg("listening")

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errc:
		return err
	case sig := <-sigc:
		log.Info().Str("signal", sig.String()).Dur("drain_timeout", o.drainTimeout).Msg("draining")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	go func() {
		<-sigc
		log.Warn().Msg("second signal: exiting now")
		os.Exit(1)
	}()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	<-errc
	log.Info().Msg("stopped")
	return nil
}

// localNames are the names the local CA's certificate covers.
func localNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" && !strings.EqualFold(h, "localhost") {
		names = append(names, h)
	}
	return names
}

func runCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("h2proxy ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "directory holding the local CA")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ca, err := certs.LoadOrCreateCA(*dataDir)
	if err != nil {
		return err
	}
	_, err = stdout.Write(ca.PEM())
	return err
}

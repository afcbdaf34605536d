// Command h2proxy runs the HTTPS forward proxy.
//
//	h2proxy [flags]               run the proxy (see -help)
//	h2proxy ca [--data-dir D]     print the local CA certificate (PEM)
//	h2proxy trust [--data-dir D]  print how to trust the local CA
//	h2proxy health [--admin A]    exit 0 when the proxy at A is healthy
//	h2proxy passwd [--file F] U   add user U to an htpasswd file
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/h2proxy/h2proxy/certs"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "h2proxy:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "ca":
			return runCA(args[1:], stdout, stderr)
		case "health":
			return runHealth(args[1:], stdout, stderr)
		case "trust":
			return runTrust(args[1:], stdout, stderr)
		case "passwd":
			return runPasswd(args[1:], os.Stdin, stdout, stderr)
		}
	}
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(opts.logFormat, opts.logLevel, stderr)
	if err != nil {
		return err
	}
	return serve(args, opts, log, stderr)
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

func runCA(args []string, stdout, stderr io.Writer) error {
	dataDir, err := dataDirFlag("h2proxy ca", args, stderr)
	if err != nil {
		return err
	}
	ca, err := certs.LoadOrCreateCA(dataDir)
	if err != nil {
		return err
	}
	_, err = stdout.Write(ca.PEM())
	return err
}

// dataDirFlag parses the --data-dir flag of the small subcommands.
func dataDirFlag(name string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "directory holding the local CA")
	err := fs.Parse(args)
	return *dataDir, err
}

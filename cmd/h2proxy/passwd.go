package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/h2proxy/h2proxy/proxy"
)

// runPasswd adds or replaces USER in an htpasswd file (or prints the
// entry). The password comes from the terminal without echo, or from the
// first line of standard input when that is not a terminal (scripts).
func runPasswd(args []string, stdin *os.File, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("h2proxy passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "htpasswd file to update (default: print the entry)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: h2proxy passwd [--file FILE] USER")
	}
	user := fs.Arg(0)
	pass, err := readPassword(stdin, stderr)
	if err != nil {
		return err
	}
	line, err := proxy.HashPassword(user, pass)
	if err != nil {
		return err
	}
	if *file == "" {
		_, err = fmt.Fprintln(stdout, line)
		return err
	}
	return replaceEntry(*file, user, line)
}

func readPassword(stdin *os.File, stderr io.Writer) (string, error) {
	if term.IsTerminal(int(stdin.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		p, err := term.ReadPassword(int(stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Again: ")
		again, err := term.ReadPassword(int(stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if string(p) != string(again) {
			return "", errors.New("passwords differ")
		}
		return nonEmpty(string(p))
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("reading the password from standard input: %w", err)
	}
	return nonEmpty(strings.TrimRight(line, "\r\n"))
}

func nonEmpty(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty password")
	}
	return p, nil
}

// replaceEntry writes the file with user's line replaced or added; the
// file is replaced atomically so the running proxy never reads half of it.
func replaceEntry(path, user, line string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var out []string
	replaced := false
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if name, _, _ := strings.Cut(l, ":"); name == user {
			l, replaced = line, true
		}
		if l != "" {
			out = append(out, l)
		}
	}
	if !replaced {
		out = append(out, line)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runHealth checks the admin endpoint's /healthz, for container health
// checks on images that have no curl.
func runHealth(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("h2proxy health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "127.0.0.1:9090", "the proxy's --admin-listen address")
	path := fs.String("path", "/healthz", "/healthz (alive) or /readyz (accepting traffic)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + *admin + *path)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s answered %s: %s", *path, resp.Status, body)
	}
	_, err = stdout.Write(body)
	return err
}

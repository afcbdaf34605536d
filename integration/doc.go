// Package integration holds end-to-end tests: they build the real h2proxy
// binary, start it on 127.0.0.1:0 and drive it with real clients (Go's
// TLS/HTTP/2 stacks, curl, h2spec, headless Chromium). It imports nothing
// of h2proxy's own packages.
package integration

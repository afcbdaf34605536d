// Package certs supplies the proxy's server certificates: a local CA that
// h2proxy creates on first run (the zero-config default) or static PEM
// files. It hands out *tls.Config values; nothing else here knows about
// the proxy.
package certs

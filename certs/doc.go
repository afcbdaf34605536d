// Package certs supplies the proxy's server certificates and hands out
// *tls.Config values; nothing here knows about the proxy.
//
// Sources:
//   - LocalCA: a CA that h2proxy creates on first run (the zero-config
//     default), issuing its own leaf in memory; TrustInstructions tells
//     users how to trust it.
//   - FileSource (and Files): static PEM files, reloaded without a
//     restart when they change.
//   - ACMEManager: certificates from an ACME CA via certmagic, renewed in
//     the background, with the TLS-ALPN-01 and HTTP-01 challenges answered
//     on h2proxy's own listeners.
//
// Each source has Expiry() map[string]time.Time for a certificate-expiry
// gauge.
package certs

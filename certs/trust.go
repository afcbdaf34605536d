package certs

import (
	"fmt"
	"strings"
)

// TrustNickname is the name the CA gets in certificate stores that want
// one (NSS), so that it can be found and removed again.
const TrustNickname = "h2proxy local CA"

// TrustInstructions is what `h2proxy trust` prints: how to make clients
// trust the local CA, per platform and browser. Paths are quoted for the
// shell each command runs in.
func TrustInstructions(ca *LocalCA) string {
	path := ca.CertPath
	sh, win := shQuote(path), winQuote(path)
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	p("h2proxy local CA")
	p("  certificate: %s", path)
	p("  subject:     %s", ca.Cert.Subject.CommonName)
	p("  expires:     %s", ca.Cert.NotAfter.Format("2006-01-02"))
	p("  SPKI sha256: %s", ca.SPKIHash())
	p("")
	p("Clients must trust this CA to connect to h2proxy. Trust it only on machines you control:")
	p("its key (next to the certificate) can sign a certificate for any site. For another machine,")
	p("copy the certificate there first (`h2proxy ca > h2proxy-ca.pem` prints it) and use that path.")
	p("")
	p("Chrome / Chromium on Linux (per user NSS database; certutil is in libnss3-tools or nss-tools):")
	p("  mkdir -p \"$HOME/.pki/nssdb\"")
	p("  [ -f \"$HOME/.pki/nssdb/cert9.db\" ] || certutil -d sql:$HOME/.pki/nssdb -N --empty-password")
	p("  certutil -d sql:$HOME/.pki/nssdb -A -t \"C,,\" -n %s -i %s", shQuote(TrustNickname), sh)
	p("  (remove: certutil -d sql:$HOME/.pki/nssdb -D -n %s)", shQuote(TrustNickname))
	p("")
	p("Or, without installing it, start Chrome trusting the CA's key for this run only:")
	p("  chromium --proxy-server=https://HOST:PORT --ignore-certificate-errors-spki-list=%s", ca.SPKIHash())
	p("")
	p("Debian / Ubuntu system store (curl, wget, Go, Python and others using /etc/ssl/certs):")
	p("  sudo cp %s /usr/local/share/ca-certificates/h2proxy-local-ca.crt", sh)
	p("  sudo update-ca-certificates")
	p("Fedora / RHEL:")
	p("  sudo cp %s /etc/pki/ca-trust/source/anchors/h2proxy-local-ca.pem && sudo update-ca-trust", sh)
	p("")
	p("macOS (System keychain; Safari and Chrome use it):")
	p("  sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain %s", sh)
	p("")
	p("Windows (elevated prompt; Edge and Chrome use the machine store):")
	p("  certutil -addstore -f ROOT %s", win)
	p("  or in PowerShell: Import-Certificate -FilePath %s -CertStoreLocation Cert:\\LocalMachine\\Root", win)
	p("")
	p("Firefox keeps its own store: Settings > Privacy & Security > Certificates > View Certificates >")
	p("Authorities > Import, tick \"Trust this CA to identify websites\". On Windows and macOS, setting")
	p("security.enterprise_roots.enabled to true in about:config makes it use the system store instead.")
	p("On Linux: certutil -d sql:PROFILE_DIR -A -t \"C,,\" -n %s -i %s", shQuote(TrustNickname), sh)
	p("")
	p("curl, for one command:")
	p("  curl --proxy https://HOST:PORT --proxy-cacert %s https://example.com/", sh)
	return b.String()
}

// shQuote quotes s for a POSIX shell when it needs it.
func shQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// winQuote quotes s for cmd.exe and PowerShell when it has spaces.
func winQuote(s string) string {
	if strings.ContainsAny(s, " \t&()^;,'") {
		return `"` + s + `"`
	}
	return s
}

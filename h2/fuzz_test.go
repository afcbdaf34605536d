package h2

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// FuzzAuthority: whatever validAuthority accepts for CONNECT is a
// host:port that net.SplitHostPort takes, with a port in 1..65535 and no
// userinfo.
func FuzzAuthority(f *testing.F) {
	for _, s := range []string{"a.test:443", "[::1]:8080", "127.0.0.1:0", "user@h:1", "h", "[::1", "a b:1", "%41:1", "h:+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		if !validAuthority(a, true) {
			return
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			t.Fatalf("accepted %q: SplitHostPort %q %q %v", a, host, port, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("accepted %q with port %q", a, port)
		}
		for i := 0; i < len(a); i++ {
			if a[i] == '@' || a[i] <= ' ' || a[i] >= 0x7f {
				t.Fatalf("accepted %q with byte %q", a, a[i])
			}
		}
	})
}

// FuzzParseFields: header translation never panics, and what it accepts
// carries no connection-specific field (RFC 9113 §8.2.2).
func FuzzParseFields(f *testing.F) {
	f.Add("cookie", "a=1", "content-length", "5")
	f.Add("te", "trailers", "x-a", " v")
	f.Add("connection", "close", "host", "h")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		if !wireName(n1) || !wireName(n2) {
			return // the Framer rejects these before parseFields sees them
		}
		want := int64(-1)
		hdr, _, code := parseFields([]hpack.HeaderField{{Name: n1, Value: v1}, {Name: n2, Value: v2}}, &want)
		if code != 0 {
			return
		}
		for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"} {
			if _, ok := hdr[k]; ok {
				t.Fatalf("accepted %s", k)
			}
		}
		if te, ok := hdr["Te"]; ok && (len(te) != 1 || te[0] != "trailers") {
			t.Fatalf("accepted TE %q", te)
		}
	})
}

// wireName is what the Framer lets through as a field name: a lowercase
// token (RFC 9113 §8.2.1).
func wireName(s string) bool {
	return httpguts.ValidHeaderFieldName(s) && strings.ToLower(s) == s
}

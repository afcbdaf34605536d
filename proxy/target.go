package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// target is a parsed destination: a host name or a canonical IP literal,
// and a port.
type target struct {
	host string     // lower-case name without trailing dot handling, or IP text
	ip   netip.Addr // valid when host is an IP literal in any spelling
	port uint16
}

// authority returns host:port for dialling and for the Host header.
func (t target) authority() string {
	return net.JoinHostPort(t.host, strconv.Itoa(int(t.port)))
}

// defaultPort is the port an http or https URL without one means.
func defaultPort(scheme string) uint16 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// parseAuthority parses the authority of a request target (RFC 9110 §7.2,
// RFC 3986 §3.2.2). For CONNECT (RFC 9110 §9.3.6) the port is required and
// defaultPort is 0. IPv4 addresses written in any form that resolvers and
// browsers accept (127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1) are turned
// into their canonical form, so that the policy sees the real address.
func parseAuthority(s string, defaultPort uint16) (target, *Error) {
	if s == "" {
		return target{}, errBadRequest("missing authority")
	}
	if strings.ContainsAny(s, "@/?#\\ \t\r\n\x00") {
		return target{}, errBadRequest("malformed authority " + strconv.Quote(s))
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		if defaultPort == 0 {
			return target{}, errBadRequest("authority " + strconv.Quote(s) + " needs host:port")
		}
		host, portStr = s, strconv.Itoa(int(defaultPort))
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return target{}, errBadRequest("bad port in " + strconv.Quote(s))
	}
	t := target{port: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return target{}, errBadRequest("zoned address " + strconv.Quote(host) + " not allowed")
		}
		t.ip = ip.Unmap()
		t.host = t.ip.String()
		return t, nil
	}
	if strings.Contains(host, ":") {
		return target{}, errBadRequest("malformed IPv6 address " + strconv.Quote(host))
	}
	host = strings.ToLower(host)
	if ip, ok, bad := parseLooseIPv4(host); bad {
		return target{}, errBadRequest("malformed IPv4 address " + strconv.Quote(host))
	} else if ok {
		t.ip, t.host = ip, ip.String()
		return t, nil
	}
	if !validHostname(host) {
		return target{}, errBadRequest("malformed host name " + strconv.Quote(host))
	}
	t.host = host
	return t, nil
}

// validHostname accepts DNS names: labels of letters, digits, '-' and '_'
// (seen in real names), 1-63 bytes, 253 bytes in all, one trailing dot.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// parseLooseIPv4 applies the WHATWG URL host parser's IPv4 rule: a host
// whose last label is a number is an IPv4 address, each part decimal, 0x
// hex or 0-prefixed octal, the last part filling the remaining bytes
// (inet_aton). ok reports an address; bad reports a host that must be an
// address but is not a valid one.
func parseLooseIPv4(h string) (ip netip.Addr, ok, bad bool) {
	parts := strings.Split(strings.TrimSuffix(h, "."), ".")
	if _, isNum := parseIPv4Part(parts[len(parts)-1]); !isNum && !looksNumeric(parts[len(parts)-1]) {
		return netip.Addr{}, false, false
	}
	if len(parts) > 4 {
		return netip.Addr{}, false, true
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		n, isNum := parseIPv4Part(p)
		if !isNum {
			return netip.Addr{}, false, true
		}
		nums[i] = n
	}
	var v uint64
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, false, true
		}
		v |= n << (8 * (3 - i))
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false, true
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true, false
}

func parseIPv4Part(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := 10
	switch {
	case strings.HasPrefix(p, "0x"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" alone is zero in the WHATWG parser
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	n, err := strconv.ParseUint(p, base, 32)
	return n, err == nil
}

// looksNumeric reports a label that is digits or 0x-hex but overflowed or
// had a bad digit: it is still meant as a number, so the host is invalid.
func looksNumeric(p string) bool {
	if p == "" {
		return false
	}
	if strings.HasPrefix(p, "0x") {
		p = p[2:]
		for i := 0; i < len(p); i++ {
			if !strings.ContainsRune("0123456789abcdef", rune(p[i])) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

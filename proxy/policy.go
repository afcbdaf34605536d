package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Policy decides which destinations the proxy may dial. It is checked on
// the address actually dialled (see dialer), so every spelling of an
// address and every name that resolves to it meets the same rule.
type Policy struct {
	// AllowPrivate lifts the rule that refuses loopback, private,
	// link-local and other non-public addresses. Default false.
	AllowPrivate bool
	// Ports are the destination ports allowed. Default DefaultPorts.
	Ports PortSet
	// Allow lists destinations reachable even though the address rule
	// would refuse them (an internal range or name). Default none.
	Allow Rules
	// Deny lists destinations refused even though they are public.
	// Deny wins over Allow. Default none.
	Deny Rules
}

// Rules match destinations: CIDRs (10.1.0.0/16), single addresses, host
// names (example.com) and wildcard names (*.example.com, which matches
// the subdomains but not example.com itself).
type Rules struct {
	prefixes []netip.Prefix
	names    map[string]bool
	suffixes []string // ".example.com" for *.example.com
}

// ParseRules parses a list of rules, naming the first bad entry.
func ParseRules(list []string) (Rules, error) {
	r := Rules{names: map[string]bool{}}
	for _, e := range list {
		e = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(e), "."))
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return Rules{}, fmt.Errorf("bad CIDR %q", e)
			}
			r.prefixes = append(r.prefixes, p.Masked())
		case strings.HasPrefix(e, "*."):
			if !validHostname(e[2:]) {
				return Rules{}, fmt.Errorf("bad wildcard name %q: want *.example.com", e)
			}
			r.suffixes = append(r.suffixes, e[1:])
		default:
			if ip, err := netip.ParseAddr(e); err == nil {
				r.prefixes = append(r.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			} else if validHostname(e) {
				r.names[e] = true
			} else {
				return Rules{}, fmt.Errorf("bad rule %q: want a CIDR, an address, a host name or *.name", e)
			}
		}
	}
	return r, nil
}

func (r Rules) matchName(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return false
	}
	if r.names[name] {
		return true
	}
	for _, suf := range r.suffixes {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

func (r Rules) matchIP(ip netip.Addr) bool {
	for _, p := range r.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// DefaultPorts is the default destination port rule: web ports and the
// unprivileged range, never the low service ports (SMTP 25, SSH 22...).
const DefaultPorts = "80,443,1025-65535"

// PortSet is a set of port ranges, parsed from "80,443,1025-65535".
type PortSet []portRange

type portRange struct{ lo, hi uint16 }

// ParsePorts parses a comma-separated list of ports and lo-hi ranges.
func ParsePorts(spec string) (PortSet, error) {
	var ps PortSet
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || l == 0 || l > h {
			return nil, fmt.Errorf("bad port or range %q: want N or LO-HI with 1 <= LO <= HI <= 65535", part)
		}
		ps = append(ps, portRange{uint16(l), uint16(h)})
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("empty port list: want e.g. %q", DefaultPorts)
	}
	return ps, nil
}

// Contains reports whether port is in the set.
func (ps PortSet) Contains(port uint16) bool {
	for _, r := range ps {
		if port >= r.lo && port <= r.hi {
			return true
		}
	}
	return false
}

func (p *Policy) checkPort(port uint16) *Error {
	if p.Ports.Contains(port) {
		return nil
	}
	return errDenied("http_request_denied", fmt.Sprintf("destination port %d is not allowed", port))
}

// precheck refuses a target whose port, name or literal address the
// policy denies, before anything is looked up or dialled.
func (p *Policy) precheck(t target) *Error {
	if e := p.checkPort(t.port); e != nil {
		return e
	}
	if t.ip.IsValid() {
		return p.checkIP(t.ip, "")
	}
	if isLocalhost(t.host) {
		return p.checkIP(loopback, t.host)
	}
	if p.Deny.matchName(t.host) {
		return errDenied("destination_ip_prohibited", t.host+" is denied by policy")
	}
	return nil
}

// checkIP decides on the address about to be dialled for the name that
// was asked for ("" for a literal address): Deny wins, then Allow, then
// the rule that only public addresses are reachable.
func (p *Policy) checkIP(ip netip.Addr, name string) *Error {
	ip = ip.Unmap()
	if p.Deny.matchIP(ip) || p.Deny.matchName(name) {
		return errDenied("destination_ip_prohibited", ip.String()+" is denied by policy")
	}
	if p.AllowPrivate || p.Allow.matchIP(ip) || p.Allow.matchName(name) {
		return nil
	}
	if class := Classify(ip); class != "" {
		return errDenied("destination_ip_prohibited", fmt.Sprintf("%s is a %s address", ip, class))
	}
	return nil
}

// special lists the non-public ranges (IANA special-purpose registries,
// RFC 6890) with the name a refusal gives.
var special = []struct {
	prefix netip.Prefix
	class  string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// Translation prefixes that embed an IPv4 address in the low 32 bits: the
// embedded address is classified too, so ::ffff:127.0.0.1 or
// 64:ff9b::7f00:1 cannot reach loopback.
var embeds4 = []netip.Prefix{
	netip.MustParsePrefix("::ffff:0:0/96"),  // IPv4-mapped (RFC 4291 §2.5.5.2)
	netip.MustParsePrefix("::/96"),          // IPv4-compatible, deprecated
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 well-known (RFC 6052)
	netip.MustParsePrefix("64:ff9b:1::/48"), // NAT64 local use (RFC 8215)
}

var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// isLocalhost reports the names that are loopback by definition (RFC 6761
// §6.3): they are judged as 127.0.0.1 and never looked up.
func isLocalhost(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

var sixToFour = netip.MustParsePrefix("2002::/16") // 6to4 (RFC 3056), IPv4 in bits 16-48

// Classify names the kind of non-public address ip is, or returns "" for
// a public unicast address.
func Classify(ip netip.Addr) string {
	ip = ip.WithZone("")
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return s.class
		}
	}
	if !ip.Is6() {
		return ""
	}
	b := ip.As16()
	for _, p := range embeds4 {
		if p.Contains(ip) {
			return Classify(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		}
	}
	if sixToFour.Contains(ip) {
		return Classify(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
	}
	return ""
}

package h2

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// reqInfo is a validated request header block.
type reqInfo struct {
	method, scheme, authority, path, protocol string
	header                                    http.Header
	url                                       *url.URL
	wantLen                                   int64 // content-length or -1
	status                                    int   // non-zero: answer with it, do not call the handler
}

func (ri *reqInfo) classicConnect() bool { return ri.method == http.MethodConnect && ri.protocol == "" }

// connSpecific are the connection-specific fields HTTP/2 forbids
// (RFC 9113 §8.2.2).
var connSpecific = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true,
}

// parseRequest validates a request header block (RFC 9113 §8.3, §8.5,
// RFC 8441 §4). A malformed request yields a PROTOCOL_ERROR stream error;
// a well-formed one with a bad authority or URL is answered with 400, and
// one over the header list limit with 431.
func (c *conn) parseRequest(f *http2.MetaHeadersFrame) (*reqInfo, http2.ErrCode) {
	ri := &reqInfo{wantLen: -1}
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			ri.method = hf.Value
		case ":scheme":
			ri.scheme = hf.Value
		case ":authority":
			ri.authority = hf.Value
		case ":path":
			ri.path = hf.Value
		case ":protocol":
			ri.protocol = hf.Value
		default: // a response pseudo-header (§8.3)
			return nil, http2.ErrCodeProtocol
		}
	}
	if f.Truncated {
		ri.status = http.StatusRequestHeaderFieldsTooLarge
		return ri, 0
	}
	if code := c.checkPseudo(ri); code != 0 {
		return nil, code
	}
	hdr, host, code := parseFields(f.RegularFields(), &ri.wantLen)
	if code != 0 {
		return nil, code
	}
	ri.header = hdr
	if host != "" {
		if ri.authority == "" {
			ri.authority = host
		} else if !strings.EqualFold(host, ri.authority) {
			return nil, http2.ErrCodeProtocol // §8.3.1: Host must match :authority
		}
	}
	if ri.protocol != "" {
		ri.header[":protocol"] = []string{ri.protocol}
	}
	ri.status = ri.parseTarget()
	return ri, 0
}

// checkPseudo applies the pseudo-header rules of §8.3.1 and §8.5 and of
// RFC 8441 §4 for extended CONNECT.
func (c *conn) checkPseudo(ri *reqInfo) http2.ErrCode {
	const bad = http2.ErrCodeProtocol
	if ri.method == "" || !validToken(ri.method) {
		return bad
	}
	connect := ri.method == http.MethodConnect
	if ri.protocol != "" && (!connect || c.cfg.DisableConnectProtocol) {
		return bad
	}
	if connect && ri.protocol == "" {
		// Classic CONNECT: only :method and :authority (§8.5).
		if ri.scheme != "" || ri.path != "" || ri.authority == "" {
			return bad
		}
		return 0
	}
	if ri.scheme == "" || ri.path == "" {
		return bad
	}
	if connect && ri.authority == "" {
		return bad
	}
	if ri.path[0] != '/' && !(ri.path == "*" && ri.method == http.MethodOptions) {
		return bad
	}
	return 0
}

// parseTarget validates :authority and :path; it returns 400 for a target
// that is syntactically HTTP/2 but not a usable URI.
func (ri *reqInfo) parseTarget() int {
	if ri.classicConnect() {
		if !validAuthority(ri.authority, true) {
			return http.StatusBadRequest
		}
		ri.url = &url.URL{Host: ri.authority}
		return 0
	}
	if ri.authority != "" && !validAuthority(ri.authority, false) {
		return http.StatusBadRequest
	}
	if ri.path == "*" {
		ri.url = &url.URL{Path: "*"}
	} else {
		u, err := url.ParseRequestURI(ri.path)
		if err != nil {
			return http.StatusBadRequest
		}
		ri.url = u
	}
	ri.url.Scheme = ri.scheme
	ri.url.Host = ri.authority
	return 0
}

// parseFields turns regular fields into an http.Header, rejecting what
// §8.2 calls malformed. Cookie crumbs are joined again (§8.2.3).
func parseFields(fields []hpack.HeaderField, wantLen *int64) (hdr http.Header, host string, code http2.ErrCode) {
	const bad = http2.ErrCodeProtocol
	hdr = make(http.Header, len(fields))
	var cookies []string
	for _, hf := range fields {
		if connSpecific[hf.Name] || hf.Name == "te" && hf.Value != "trailers" {
			return nil, "", bad
		}
		if v := hf.Value; v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
			return nil, "", bad // §8.2.1: no leading or trailing whitespace
		}
		switch hf.Name {
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		case "host":
			host = hf.Value
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || *wantLen >= 0 && int64(n) != *wantLen {
				return nil, "", bad
			}
			*wantLen = int64(n)
		}
		k := http.CanonicalHeaderKey(hf.Name)
		hdr[k] = append(hdr[k], hf.Value)
	}
	if len(cookies) > 0 {
		hdr["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	return hdr, host, 0
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' }

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return s != ""
}

// validAuthority checks host[:port] (RFC 3986 §3.2.2 without userinfo,
// which RFC 9113 §8.3.1 forbids). needPort is set for CONNECT, whose
// authority must name the port (RFC 9110 §9.3.6).
func validAuthority(a string, needPort bool) bool {
	host, port := a, ""
	if strings.HasPrefix(a, "[") {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return false
		}
		host, port = a[1:end], a[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil && !strings.Contains(host, ":") {
			return false
		}
		if port != "" && port[0] != ':' {
			return false
		}
		port = strings.TrimPrefix(port, ":")
	} else {
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			host, port = a[:i], a[i+1:]
		}
		if host == "" || !validRegName(host) {
			return false
		}
	}
	if port == "" {
		return !needPort && !strings.HasSuffix(a, ":")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0 && port[0] != '+'
}

// validRegName accepts unreserved, sub-delims and percent-encoded octets.
func validRegName(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=", b) >= 0:
		case b == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

// declaredTrailers returns the request's Trailer map with the names the
// client announced in its Trailer field, as net/http does.
func declaredTrailers(h http.Header) http.Header {
	var t http.Header
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			switch k {
			case "", "Transfer-Encoding", "Trailer", "Content-Length":
				continue
			}
			if t == nil {
				t = make(http.Header)
			}
			t[k] = nil
		}
	}
	return t
}

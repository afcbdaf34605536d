package ws

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Handshake fields a proxy carries between the two handshake forms.
const (
	hdrKey        = "Sec-Websocket-Key"
	hdrAccept     = "Sec-Websocket-Accept"
	hdrVersion    = "Sec-Websocket-Version"
	hdrProtocol   = "Sec-Websocket-Protocol"
	hdrExtensions = "Sec-Websocket-Extensions"
)

// IsUpgrade reports an HTTP/1.1 opening handshake: Connection lists
// "upgrade" and Upgrade is "websocket" (RFC 6455 §4.1).
func IsUpgrade(h http.Header) bool {
	return hasToken(h.Values("Connection"), "upgrade") && strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket")
}

// Offer is what a client asks for in its opening handshake, in a form
// independent of HTTP/1.1 or HTTP/2.
type Offer struct {
	Protocols  string // Sec-WebSocket-Protocol: comma list of tokens
	Extensions string // Sec-WebSocket-Extensions
	Origin     string // Origin (RFC 6454)
	Key        string // Sec-WebSocket-Key of an HTTP/1.1 client ("" from HTTP/2)
}

// ErrBadHandshake reports a handshake field that must not be relayed.
var ErrBadHandshake = errors.New("bad WebSocket handshake")

// ParseOffer validates the handshake fields of a client request. Version
// must be 13 (RFC 6455 §4.1, RFC 8441 §5). needKey is set for HTTP/1.1
// clients, whose key the proxy answers itself when the origin speaks
// HTTP/2. Values with CR, LF or NUL, or that are not lists of tokens where
// the RFC wants tokens, are refused rather than written upstream.
func ParseOffer(h http.Header, needKey bool) (Offer, error) {
	if v := h.Get(hdrVersion); v != Version {
		return Offer{}, fmt.Errorf("%w: Sec-WebSocket-Version %q, want %s", ErrBadHandshake, v, Version)
	}
	o := Offer{
		Protocols:  strings.Join(h.Values(hdrProtocol), ", "),
		Extensions: strings.Join(h.Values(hdrExtensions), ", "),
		Origin:     h.Get("Origin"),
	}
	if needKey {
		o.Key = h.Get(hdrKey)
		if !ValidKey(o.Key) {
			return Offer{}, fmt.Errorf("%w: Sec-WebSocket-Key must be base64 of 16 bytes", ErrBadHandshake)
		}
	}
	if !tokenList(o.Protocols) {
		return Offer{}, fmt.Errorf("%w: Sec-WebSocket-Protocol %q is not a list of tokens", ErrBadHandshake, o.Protocols)
	}
	if !extensionList(o.Extensions) {
		return Offer{}, fmt.Errorf("%w: malformed Sec-WebSocket-Extensions %q", ErrBadHandshake, o.Extensions)
	}
	if !fieldValue(o.Origin) {
		return Offer{}, fmt.Errorf("%w: malformed Origin", ErrBadHandshake)
	}
	return o, nil
}

// header puts the offer's optional fields in h.
func (o Offer) header(h http.Header) {
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set(hdrVersion, Version)
	set(hdrProtocol, o.Protocols)
	set(hdrExtensions, o.Extensions)
	set("Origin", o.Origin)
}

// UpgradeHeader returns the request fields of an HTTP/1.1 opening
// handshake (RFC 6455 §4.1) for o, with key as Sec-WebSocket-Key.
func (o Offer) UpgradeHeader(key string) http.Header {
	h := http.Header{}
	o.header(h)
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set(hdrKey, key)
	return h
}

// ConnectHeader returns the request fields of an RFC 8441 extended
// CONNECT for o: no key and no Upgrade/Connection (RFC 8441 §5).
func (o Offer) ConnectHeader() http.Header {
	h := http.Header{":protocol": {"websocket"}}
	o.header(h)
	return h
}

// Answer is what the origin chose, relayed to the client.
type Answer struct {
	Protocol   string
	Extensions string
}

// CheckUpgradeResponse verifies an origin's 101 to an HTTP/1.1 handshake
// sent with key: Upgrade, Connection and Sec-WebSocket-Accept (RFC 6455
// §4.2.2, §4.1 client checks). The chosen protocol must be one offered.
func CheckUpgradeResponse(resp *http.Response, o Offer, key string) (Answer, error) {
	h := resp.Header
	switch {
	case resp.StatusCode != http.StatusSwitchingProtocols:
		return Answer{}, fmt.Errorf("%w: status %d, want 101", ErrBadHandshake, resp.StatusCode)
	case !strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket"):
		return Answer{}, fmt.Errorf("%w: Upgrade %q, want websocket", ErrBadHandshake, h.Get("Upgrade"))
	case !hasToken(h.Values("Connection"), "upgrade"):
		return Answer{}, fmt.Errorf("%w: Connection lacks upgrade", ErrBadHandshake)
	case h.Get(hdrAccept) != Accept(key):
		return Answer{}, fmt.Errorf("%w: wrong Sec-WebSocket-Accept", ErrBadHandshake)
	}
	return answer(h, o)
}

// CheckConnectResponse reads the origin's choices from a 2xx answer to an
// extended CONNECT.
func CheckConnectResponse(h http.Header, o Offer) (Answer, error) { return answer(h, o) }

func answer(h http.Header, o Offer) (Answer, error) {
	a := Answer{Protocol: strings.TrimSpace(h.Get(hdrProtocol)), Extensions: strings.Join(h.Values(hdrExtensions), ", ")}
	if a.Protocol != "" && !hasToken([]string{o.Protocols}, a.Protocol) {
		return Answer{}, fmt.Errorf("%w: origin chose subprotocol %q, which was not offered", ErrBadHandshake, a.Protocol)
	}
	if !extensionList(a.Extensions) {
		return Answer{}, fmt.Errorf("%w: malformed Sec-WebSocket-Extensions from origin", ErrBadHandshake)
	}
	return a, nil
}

// ConnectResponseHeader is the header of the 200 answering an extended
// CONNECT: the choices only, no Upgrade, Connection or Accept (RFC 8441 §5).
func (a Answer) ConnectResponseHeader() http.Header {
	h := http.Header{}
	a.set(h)
	return h
}

// UpgradeResponseHeader is the header of the 101 answering an HTTP/1.1
// client whose key was clientKey.
func (a Answer) UpgradeResponseHeader(clientKey string) http.Header {
	h := http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}
	h.Set(hdrAccept, Accept(clientKey))
	a.set(h)
	return h
}

func (a Answer) set(h http.Header) {
	if a.Protocol != "" {
		h.Set(hdrProtocol, a.Protocol)
	}
	if a.Extensions != "" {
		h.Set(hdrExtensions, a.Extensions)
	}
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// tokenList accepts "" or a comma list of RFC 9110 §5.6.2 tokens.
func tokenList(s string) bool {
	if s == "" {
		return true
	}
	if !fieldValue(s) {
		return false // TrimSpace below would hide a CR or LF at the ends
	}
	for _, t := range strings.Split(s, ",") {
		if !isToken(strings.TrimSpace(t)) {
			return false
		}
	}
	return true
}

// extensionList accepts RFC 6455 §9.1 extension lists: tokens with
// ;-parameters whose values are tokens or quoted strings.
func extensionList(s string) bool {
	if !fieldValue(s) {
		return false
	}
	if s == "" {
		return true
	}
	for _, ext := range strings.Split(s, ",") {
		parts := strings.Split(ext, ";")
		if !isToken(strings.TrimSpace(parts[0])) {
			return false
		}
		for _, p := range parts[1:] {
			name, val, hasVal := strings.Cut(strings.TrimSpace(p), "=")
			if !isToken(strings.TrimSpace(name)) {
				return false
			}
			val = strings.TrimSpace(val)
			if hasVal && !isToken(val) && !(len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"') {
				return false
			}
		}
	}
	return true
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// fieldValue rejects what could split or end a header line.
func fieldValue(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}

package ws

import (
	"net/http"
	"strings"
	"testing"
)

func TestOfferRoundTrip(t *testing.T) {
	h := http.Header{}
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Protocol", "chat, superchat")
	h.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	h.Set("Origin", "https://example.com")
	o, err := ParseOffer(h, false)
	if err != nil {
		t.Fatal(err)
	}
	key := NewKey()
	up := o.UpgradeHeader(key)
	if up.Get("Upgrade") != "websocket" || up.Get("Sec-WebSocket-Key") != key || up.Get("Sec-WebSocket-Protocol") != "chat, superchat" {
		t.Fatalf("upgrade header %v", up)
	}
	resp := &http.Response{StatusCode: 101, Header: http.Header{
		"Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-Websocket-Accept": {Accept(key)}, "Sec-Websocket-Protocol": {"chat"},
		"Sec-Websocket-Extensions": {"permessage-deflate"},
	}}
	a, err := CheckUpgradeResponse(resp, o, key)
	if err != nil {
		t.Fatal(err)
	}
	got := a.ConnectResponseHeader()
	if got.Get("Sec-WebSocket-Protocol") != "chat" || got.Get("Sec-WebSocket-Extensions") != "permessage-deflate" || got.Get("Upgrade") != "" {
		t.Fatalf("200 header %v", got)
	}
	resp.Header.Set("Sec-WebSocket-Accept", Accept(NewKey()))
	if _, err := CheckUpgradeResponse(resp, o, key); err == nil {
		t.Fatal("wrong accept was accepted")
	}
	resp.Header.Set("Sec-WebSocket-Accept", Accept(key))
	resp.Header.Set("Sec-WebSocket-Protocol", "other")
	if _, err := CheckUpgradeResponse(resp, o, key); err == nil {
		t.Fatal("a subprotocol the client did not offer was accepted")
	}
}

func TestParseOfferRejects(t *testing.T) {
	base := func() http.Header {
		return http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {NewKey()}}
	}
	cases := map[string]func(http.Header){
		"version 8":     func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") },
		"no key":        func(h http.Header) { h.Del("Sec-WebSocket-Key") },
		"short key":     func(h http.Header) { h.Set("Sec-WebSocket-Key", "c2hvcnQ=") },
		"protocol CRLF": func(h http.Header) { h["Sec-Websocket-Protocol"] = []string{"chat\r\nX-Evil: 1"} },
		"protocol sep":  func(h http.Header) { h.Set("Sec-WebSocket-Protocol", "a b") },
		"ext NUL":       func(h http.Header) { h["Sec-Websocket-Extensions"] = []string{"x\x00"} },
		"origin LF":     func(h http.Header) { h["Origin"] = []string{"https://a\nb"} },
	}
	for name, mutate := range cases {
		h := base()
		mutate(h)
		if _, err := ParseOffer(h, true); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseOffer(base(), true); err != nil {
		t.Fatalf("valid offer refused: %v", err)
	}
}

// FuzzOffer checks that nothing ParseOffer accepts can put a line break or
// NUL into the headers written upstream, in either handshake form.
func FuzzOffer(f *testing.F) {
	f.Add("chat, superchat", "permessage-deflate; client_max_window_bits=15", "https://example.com")
	f.Add("a\r\nb", "x;y=\"z\"", "")
	f.Fuzz(func(t *testing.T, proto, ext, origin string) {
		h := http.Header{"Sec-Websocket-Version": {"13"}}
		h["Sec-Websocket-Protocol"] = []string{proto}
		h["Sec-Websocket-Extensions"] = []string{ext}
		h["Origin"] = []string{origin}
		o, err := ParseOffer(h, false)
		if err != nil {
			return
		}
		for _, out := range []http.Header{o.UpgradeHeader(NewKey()), o.ConnectHeader()} {
			for k, vs := range out {
				for _, v := range vs {
					if strings.ContainsAny(k+v, "\r\n\x00") {
						t.Fatalf("%q: %q would be written upstream", k, v)
					}
				}
			}
		}
	})
}

package integration

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Request smuggling and translation safety. Whatever a client sends, the
// origin must see either exactly one well-formed request or nothing: the
// proxy must never let two parsers disagree about where a request ends
// (RFC 9112 §6.3, §11.2), never pass on fields that change the connection
// (RFC 9110 §7.6.1, §7.8), and never let a request say two different
// things about its target (RFC 9112 §3.2.2, RFC 9113 §8.3.1).

// TestSecuritySmugglingH1: requests over HTTP/1.1, sent raw.
func TestSecuritySmugglingH1(t *testing.T) {
	origin := startRecordingOrigin(t)
	p := StartProxy(t, "--allow-private")
	url := "http://" + origin.Addr + "/"
	host := "Host: " + origin.Addr + "\r\n"
	cases := []struct {
		name   string
		raw    string
		status int                                 // want
		check  func(t *testing.T, got seenRequest) // when the request is to be forwarded
		or400  bool                                // a 400 with nothing forwarded is as good
	}{
		{
			// An h2c upgrade (RFC 7540 §3.2) is hop-by-hop: passing it on
			// would let the client talk HTTP/2 to the origin past the proxy.
			name: "Upgrade h2c and HTTP2-Settings are not forwarded",
			raw: "GET " + url + " HTTP/1.1\r\n" + host + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
				"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			status: 200,
			check: func(t *testing.T, got seenRequest) {
				for _, h := range []string{"Upgrade", "Http2-Settings", "Connection"} {
					if v := got.Header.Values(h); len(v) > 0 {
						t.Errorf("the origin received %s: %q", h, v)
					}
				}
			},
		},
		{
			// RFC 9112 §3.2.2: with an absolute-form target the Host field
			// is ignored and replaced by the target's authority.
			name:   "absolute-form wins over Host",
			raw:    "GET " + url + "where HTTP/1.1\r\nHost: evil.example\r\n\r\n",
			status: 200,
			check: func(t *testing.T, got seenRequest) {
				if got.Host != origin.Addr || got.Path != "/where" {
					t.Errorf("the origin saw Host %q path %q, want %q /where", got.Host, got.Path, origin.Addr)
				}
			},
		},
		{
			// RFC 9112 §6.1: a request with both may be an attempt to smuggle;
			// a server ought to handle it as an error (§6.3 item 3).
			name: "Content-Length with Transfer-Encoding",
			raw: "POST " + url + " HTTP/1.1\r\n" + host + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n",
			status: 400,
		},
		{
			name:   "two different Content-Lengths",
			raw:    "POST " + url + " HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
			status: 400,
		},
		{
			name:   "whitespace before the colon",
			raw:    "POST " + url + " HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
			status: 400,
		},
		{
			name:   "unknown transfer coding",
			raw:    "POST " + url + " HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
			status: 501,
		},
		{name: "NUL in a field value", raw: "GET " + url + " HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", status: 400},
		{name: "CR in a field value", raw: "GET " + url + " HTTP/1.1\r\n" + host + "X-A: a\rX-B: b\r\n\r\n", status: 400},
		{name: "NUL in a field name", raw: "GET " + url + " HTTP/1.1\r\n" + host + "X-\x00A: b\r\n\r\n", status: 400},
		{name: "CR in a field name", raw: "GET " + url + " HTTP/1.1\r\n" + host + "X-\rA: b\r\n\r\n", status: 400},
		{name: "space in a field name", raw: "GET " + url + " HTTP/1.1\r\n" + host + "X A: b\r\n\r\n", status: 400},
		{
			// RFC 9112 §5.2: obs-fold is rejected with 400, or replaced by
			// spaces before the field is interpreted or forwarded.
			name:   "obsolete line folding",
			raw:    "GET " + url + " HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n",
			status: 200,
			or400:  true,
			check: func(t *testing.T, got seenRequest) {
				if v := got.Header.Get("X-A"); strings.ContainsAny(v, "\r\n") {
					t.Errorf("the origin received a folded field %q", v)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(origin.Seen())
			c1 := dialH1From(t, p, "")
			c1.send(t, []byte(c.raw))
			_ = c1.SetDeadline(time.Now().Add(5 * time.Second))
			resp := c1.response(t, strings.Fields(c.raw)[0])
			resp.Body.Close()
			seen := origin.Seen()[before:]
			if c.or400 && resp.StatusCode == 400 && len(seen) == 0 {
				return
			}
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d; the origin received %d requests: %+v", resp.StatusCode, c.status, len(seen), seen)
			}
			switch {
			case c.check == nil && len(seen) != 0:
				t.Errorf("the origin received %d requests, want none: %+v", len(seen), seen)
			case c.check != nil && len(seen) != 1:
				t.Errorf("the origin received %d requests, want exactly one: %+v", len(seen), seen)
			case c.check != nil:
				c.check(t, seen[0])
			}
		})
	}
}

// TestSecuritySmugglingH2: requests over HTTP/2, sent with the raw framer
// since well-behaved clients refuse to send them. Malformed requests (RFC
// 9113 §8.1.1) are refused: 400, or a stream error PROTOCOL_ERROR.
func TestSecuritySmugglingH2(t *testing.T) {
	origin := startRecordingOrigin(t)
	p := StartProxy(t, "--allow-private")
	cases := []struct {
		name   string
		fields []string
		ok     bool // forwarded (200), else refused
		check  func(t *testing.T, got seenRequest)
	}{
		{
			// RFC 9113 §8.3.1: a Host that names another entity than
			// :authority makes the request ambiguous.
			name:   "Host conflicting with :authority",
			fields: getFields(origin.Addr, "/", "host", "evil.example"),
		},
		{
			name:   "Host equal to :authority",
			fields: getFields(origin.Addr, "/", "host", origin.Addr),
			ok:     true,
		},
		{
			// RFC 9113 §8.2.2: connection-specific fields make a request
			// malformed.
			name:   "upgrade: h2c",
			fields: getFields(origin.Addr, "/", "upgrade", "h2c"),
		},
		{
			name:   "transfer-encoding",
			fields: getFields(origin.Addr, "/", "transfer-encoding", "chunked"),
		},
		{
			name:   "connection",
			fields: getFields(origin.Addr, "/", "connection", "keep-alive"),
		},
		{
			// Not listed by RFC 9113 but hop-by-hop by definition (RFC 7540
			// §3.2.1): dropped, not forwarded.
			name:   "http2-settings is dropped",
			fields: getFields(origin.Addr, "/", "http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
			ok:     true,
			check: func(t *testing.T, got seenRequest) {
				if v := got.Header.Values("Http2-Settings"); len(v) > 0 {
					t.Errorf("the origin received HTTP2-Settings %q", v)
				}
			},
		},
		// RFC 9113 §8.2.1: field values with CR, LF or NUL, and names with
		// upper case or separators, are malformed.
		{name: "CR LF in a value", fields: getFields(origin.Addr, "/", "x-a", "a\r\nx-b: b")},
		{name: "LF in a value", fields: getFields(origin.Addr, "/", "x-a", "a\nb")},
		{name: "NUL in a value", fields: getFields(origin.Addr, "/", "x-a", "a\x00b")},
		{name: "upper case name", fields: getFields(origin.Addr, "/", "X-Upper", "a")},
		{name: "colon inside a name", fields: getFields(origin.Addr, "/", "x:a", "b")},
		{name: "space in a name", fields: getFields(origin.Addr, "/", "x a", "b")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(origin.Seen())
			r := dialRawH2(t, p)
			o := r.answer(t, 1, c.fields...)
			t.Logf("%s: %v", c.name, o)
			seen := origin.Seen()[before:]
			switch {
			case c.ok && o.status[1] != "200":
				t.Errorf("%v, want 200", o)
			case !c.ok && o.status[1] != "400" && o.rst[1] != http2.ErrCodeProtocol && !(o.goAway && o.code == http2.ErrCodeProtocol):
				t.Errorf("%v, want 400 or PROTOCOL_ERROR; the origin received %+v", o, seen)
			}
			want := map[bool]int{true: 1, false: 0}[c.ok]
			if len(seen) != want {
				t.Errorf("the origin received %d requests, want %d: %+v", len(seen), want, seen)
			}
			if c.check != nil && len(seen) == 1 {
				c.check(t, seen[0])
			}
		})
	}
}

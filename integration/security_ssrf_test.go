package integration

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Server-side request forgery: the proxy must never become a way into
// loopback, private networks or cloud metadata. Every spelling of those
// addresses is refused before anything is dialled; names are judged on the
// address actually dialled, so DNS answers that change between lookups
// (rebinding) cannot slip a denied address through; and the proxy never
// connects to itself. The tests only ever send traffic to loopback: the
// proxy refuses the other addresses before any connect(2), and the
// proxy's DNS goes to a fake server on loopback that logs every question.

// fakeDNS is a DNS server on 127.0.0.1 (UDP) answering A queries from a
// function; AAAA and every other question get an empty answer. It logs
// the names asked.
type fakeDNS struct {
	Addr   string
	srv    *dns.Server
	mu     sync.Mutex
	asked  []string
	answer func(name string, n int64) []net.IP // n: how many A queries so far
	count  atomic.Int64
}

func startFakeDNS(t testing.TB, answer func(name string, n int64) []net.IP) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDNS{Addr: pc.LocalAddr().String(), answer: answer}
	started := make(chan struct{})
	f.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(f.serve), NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = f.srv.Shutdown()
		<-done
	})
	return f
}

func (f *fakeDNS) serve(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	for _, question := range q.Question {
		name := strings.TrimSuffix(strings.ToLower(question.Name), ".")
		f.mu.Lock()
		f.asked = append(f.asked, name)
		f.mu.Unlock()
		if question.Qtype != dns.TypeA || f.answer == nil {
			continue
		}
		for _, ip := range f.answer(name, f.count.Add(1)) {
			// TTL 0: no resolver may cache the answer (RFC 1035 §3.2.1).
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: ip})
		}
	}
	_ = w.WriteMsg(m)
}

// Asked returns the names looked up so far.
func (f *fakeDNS) Asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

// ssrfSpellings are loopback, private, link-local and metadata addresses
// in the forms browsers and inet_aton accept (WHATWG URL host parsing:
// decimal, hex, octal, fewer than four parts) and in the IPv6 forms that
// embed an IPv4 address.
var ssrfSpellings = []string{
	// 127.0.0.1
	"127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f.0.0.1", "0x7f000001", "0x7F.1",
	"0177.0.0.1", "0177.1", "127.000.000.001",
	// IPv6 loopback, and IPv4 loopback embedded in IPv6
	"[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]",
	"[64:ff9b::127.0.0.1]", "[2002:7f00:1::]", "[::127.0.0.1]",
	// names that are loopback by definition (RFC 6761 §6.3)
	"localhost", "localhost.", "LOCALHOST", "api.localhost",
	// cloud metadata (link-local), in several spellings
	"169.254.169.254", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "[::ffff:169.254.169.254]",
	"[fe80::1]", "[fd00:ec2::254]",
	// private, shared, unspecified, multicast
	"10.0.0.1", "012.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "0.0.0.0", "0", "[::]", "224.0.0.1",
}

// TestSecuritySSRFSpellings: every spelling is refused with 403
// destination_ip_prohibited through CONNECT and forwarding on h1 and h2,
// with authentication off and on (an authenticated user gets no more
// than the default policy), without a DNS lookup and without anything
// reaching a listener on the loopback port they name.
func TestSecuritySSRFSpellings(t *testing.T) {
	v4 := startTarget(t, nil)
	port := v4.Port()
	listeners := []*tcpTarget{v4}
	if v6, err := listenTarget(t, "[::1]:"+strconv.Itoa(port), nil); err == nil {
		listeners = append(listeners, v6)
	}
	resolver := startFakeDNS(t, nil)
	modes := []struct {
		name  string
		flags []string
		auth  string
	}{
		{"auth off", nil, ""},
		{"auth on", []string{"--auth-file", writeHtpasswd(t, map[string]string{"alice": alicePass})}, basicAuth("alice", alicePass)},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			p := StartProxy(t, append([]string{"--dns-server", resolver.Addr}, m.flags...)...)
			for _, host := range ssrfSpellings {
				authority := hostPort(host, port)
				for _, kind := range proxyKinds {
					t.Run(kind+" "+authority, func(t *testing.T) {
						resp, _, _ := proxyRequest(t, p, kind, "", authority, m.auth)
						wantRefusal(t, kind+" "+authority, resp, http.StatusForbidden, "destination_ip_prohibited")
					})
				}
			}
		})
	}
	for _, l := range listeners {
		if n := l.Accepted(); n != 0 {
			t.Errorf("listener %s accepted %d connections: a refused destination was dialled", l.Addr(), n)
		}
	}
	if asked := resolver.Asked(); len(asked) > 0 {
		t.Errorf("address literals and localhost names needed no lookup, but the proxy asked DNS for %q", asked)
	}
}

// loopbackTargets listens on one port on several loopback addresses, so
// that one authority (a name, or host:port per address) reaches whichever
// the proxy dials. Each counts what it accepted.
func loopbackTargets(t *testing.T, ips ...string) (int, map[string]*tcpTarget) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		first, err := listenTarget(t, ips[0]+":0", echoConn)
		if err != nil {
			t.Fatal(err)
		}
		port := first.Port()
		all := map[string]*tcpTarget{ips[0]: first}
		for _, ip := range ips[1:] {
			tg, err := listenTarget(t, hostPort(ip, port), echoConn)
			if err != nil {
				break
			}
			all[ip] = tg
		}
		if len(all) == len(ips) {
			return port, all
		}
		if attempt == 5 {
			t.Fatalf("no port free on all of %v", ips)
		}
	}
}

// TestSecurityDestinationRules: --allow-dest, --deny-dest and
// --allow-ports, with addresses, CIDRs and wildcard names; deny wins over
// allow. 127.0.0.3 is refused in every case, so its listener must never
// see a connection.
func TestSecurityDestinationRules(t *testing.T) {
	port, tg := loopbackTargets(t, "127.0.0.2", "127.0.0.3")
	resolver := startFakeDNS(t, func(name string, _ int64) []net.IP {
		if strings.HasSuffix(name, "loop.test") {
			return []net.IP{net.ParseIP("127.0.0.2")}
		}
		return nil
	})
	at := func(host string) string { return hostPort(host, port) }
	type expect struct {
		authority string
		status    int
		errType   string
	}
	denied := func(host string) expect { return expect{at(host), 403, "destination_ip_prohibited"} }
	allowed := func(host string) expect { return expect{at(host), 200, ""} }
	cases := []struct {
		name   string
		flags  []string
		expect []expect
	}{
		{"default refuses loopback", nil, []expect{denied("127.0.0.2"), denied("127.0.0.3"), denied("a.loop.test")}},
		{"allow one address", []string{"--allow-dest", "127.0.0.2"}, []expect{allowed("127.0.0.2"), denied("127.0.0.3")}},
		{"deny wins over an allowed CIDR", []string{"--allow-dest", "127.0.0.0/24", "--deny-dest", "127.0.0.3"},
			[]expect{allowed("127.0.0.2"), denied("127.0.0.3"), denied("[::ffff:127.0.0.3]")}},
		{"deny within allow-private", []string{"--allow-private", "--deny-dest", "127.0.0.3/32"},
			[]expect{allowed("127.0.0.2"), denied("127.0.0.3"), denied("0x7f000003")}},
		{"wildcard allow matches subdomains only", []string{"--allow-dest", "*.loop.test"},
			[]expect{allowed("a.loop.test"), allowed("b.a.loop.test"), denied("loop.test")}},
		{"wildcard deny needs no lookup", []string{"--allow-private", "--deny-dest", "*.bad.test,127.0.0.3"},
			[]expect{denied("x.bad.test"), allowed("a.loop.test"), denied("127.0.0.3")}},
		{"ports", []string{"--allow-private", "--allow-ports", "443,1-1024"},
			[]expect{{at("127.0.0.2"), 403, "http_request_denied"}, {at("127.0.0.3"), 403, "http_request_denied"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := StartProxy(t, append([]string{"--dns-server", resolver.Addr}, c.flags...)...)
			for _, e := range c.expect {
				for _, kind := range []string{kindH1Connect, kindH2Connect} {
					status, ps := connectStatus(t, p, kind, e.authority, "")
					if status != e.status || (e.errType != "" && !strings.HasPrefix(ps, "h2proxy; error="+e.errType)) {
						t.Errorf("%s %s: %d %q, want %d %s", kind, e.authority, status, ps, e.status, e.errType)
					}
				}
			}
		})
	}
	if n := tg["127.0.0.3"].Accepted(); n != 0 {
		t.Errorf("127.0.0.3, refused in every case, accepted %d connections", n)
	}
	for _, name := range resolver.Asked() {
		if strings.HasSuffix(name, "bad.test") {
			t.Errorf("the proxy looked up %s although *.bad.test is denied by name", name)
		}
	}
}

// TestSecurityPerUserRules: the config file's users: key gives users their
// own destination rules, replacing the global ones; a user without an
// entry gets the global (default) policy.
func TestSecurityPerUserRules(t *testing.T) {
	port, tg := loopbackTargets(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	pass := map[string]string{"alice": "a-pass", "bob": "b-pass", "carol": "c-pass", "dave": "d-pass"}
	config := writeTempFile(t, "h2proxy.yaml", []byte(`users:
  alice:
    allow-dest: [127.0.0.2]
  bob:
    allow-private: true
    deny-dest: [127.0.0.2, 127.0.0.3]
  carol:
    allow-private: true
    allow-ports: "443"
`))
	p := StartProxy(t, "--config", config, "--auth-file", writeHtpasswd(t, pass))
	cases := []struct {
		user, host string
		status     int
	}{
		{"alice", "127.0.0.2", 200}, {"alice", "127.0.0.4", 403},
		{"bob", "127.0.0.4", 200}, {"bob", "127.0.0.2", 403},
		{"carol", "127.0.0.4", 403}, // her port list leaves out the target's port
		{"dave", "127.0.0.2", 403}, {"dave", "127.0.0.3", 403},
	}
	for _, c := range cases {
		for _, kind := range []string{kindH1Connect, kindH2Connect} {
			authority := hostPort(c.host, port)
			if status, ps := connectStatus(t, p, kind, authority, basicAuth(c.user, pass[c.user])); status != c.status {
				t.Errorf("%s for %s to %s: %d %q, want %d", kind, c.user, authority, status, ps, c.status)
			}
		}
	}
	if n := tg["127.0.0.3"].Accepted(); n != 0 {
		t.Errorf("127.0.0.3, refused for everyone, accepted %d connections", n)
	}
}

// TestSecurityDNSRebinding: a name whose answers alternate, with TTL 0,
// between an allowed address (127.0.0.2, allowed with --allow-dest) and a
// denied one (127.0.0.3). The policy is applied to the address dialled, so
// whichever answer a request gets, the denied address is never connected
// to. A name answering both addresses gets the allowed one.
func TestSecurityDNSRebinding(t *testing.T) {
	port, tg := loopbackTargets(t, "127.0.0.2", "127.0.0.3")
	allowedIP, deniedIP := net.ParseIP("127.0.0.2"), net.ParseIP("127.0.0.3")
	resolver := startFakeDNS(t, func(name string, n int64) []net.IP {
		switch name {
		case "rebind.test":
			if n%2 == 0 {
				return []net.IP{deniedIP}
			}
			return []net.IP{allowedIP}
		case "both.test":
			return []net.IP{deniedIP, allowedIP}
		}
		return nil
	})
	p := StartProxy(t, "--dns-server", resolver.Addr, "--allow-dest", "127.0.0.2")
	const requests = 40
	statuses := map[int]int{}
	for i := range requests {
		kind := []string{kindH1Connect, kindH2Connect}[i%2]
		status, ps := connectStatus(t, p, kind, hostPort("rebind.test", port), "")
		statuses[status]++
		if status != 200 && !strings.HasPrefix(ps, "h2proxy; error=destination_ip_prohibited") {
			t.Errorf("%s rebind.test: %d %q, want 200 or 403 destination_ip_prohibited", kind, status, ps)
		}
	}
	t.Logf("%d CONNECTs to rebind.test: statuses %v; %d DNS questions", requests, statuses, len(resolver.Asked()))
	if statuses[200] == 0 || statuses[403] == 0 {
		t.Errorf("statuses %v: want both answers to have been used (200 via 127.0.0.2, 403 for 127.0.0.3)", statuses)
	}
	for range 5 {
		if status, ps := connectStatus(t, p, kindH1Connect, hostPort("both.test", port), ""); status != 200 {
			t.Errorf("both.test (127.0.0.3 and 127.0.0.2): %d %q, want 200 through 127.0.0.2", status, ps)
		}
	}
	if n := tg["127.0.0.3"].Accepted(); n != 0 {
		t.Errorf("the denied address accepted %d connections", n)
	}
	if got, want := tg["127.0.0.2"].Accepted(), int64(statuses[200]+5); got != want {
		t.Errorf("the allowed address accepted %d connections, want %d (one per tunnel)", got, want)
	}
}

// TestSecurityProxyLoop: the proxy refuses to connect to itself, by any
// spelling of its listening address (508, RFC 5842 §7.2, Proxy-Status
// proxy_loop_detected), and refuses a request whose Via already carries
// its own entry (RFC 9110 §7.6.3), so a request can never circle.
func TestSecurityProxyLoop(t *testing.T) {
	origin := startRecordingOrigin(t)
	p := StartProxy(t, "--allow-private")
	_, port, _ := net.SplitHostPort(p.Addr)
	hosts := []string{"127.0.0.1", "localhost", "127.1", "[::ffff:127.0.0.1]", "0x7f000001", "0.0.0.0"}
	for _, host := range hosts {
		authority := host + ":" + port
		for _, kind := range proxyKinds {
			t.Run(kind+" "+authority, func(t *testing.T) {
				resp, _, _ := proxyRequest(t, p, kind, "", authority, "")
				// A forward for the proxy's own name and port is a request
				// to it, answered locally (RFC 9112 §3.2.2); that is no loop.
				if (kind == kindH1Forward || kind == kindH2Forward) && resp.StatusCode == http.StatusOK {
					return
				}
				wantRefusal(t, kind+" "+authority, resp, http.StatusLoopDetected, "proxy_loop_detected")
			})
		}
	}

	// Learn this proxy's Via entry from a forwarded request...
	resp, _ := h1RoundTrip(t, p, "", h1GetAuth("http://"+origin.Addr+"/", ""), http.MethodGet)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forward: %d", resp.StatusCode)
	}
	via := origin.wantSeen(t, "first forward", 1)[0].Header.Get("Via")
	if !strings.Contains(via, "h2proxy (") {
		t.Fatalf("the origin saw Via %q, want this proxy's entry", via)
	}
	// ...then send it back as if the request had come round.
	for _, c := range []struct {
		via    string
		status int
	}{
		{via, http.StatusLoopDetected},
		{"1.1 cache.example, " + via, http.StatusLoopDetected},
		{"1.1 h2proxy (00000000)", http.StatusOK}, // another instance: not a loop
	} {
		raw := "GET http://" + origin.Addr + "/again HTTP/1.1\r\nHost: " + origin.Addr + "\r\nVia: " + c.via + "\r\n\r\n"
		resp, _ := h1RoundTrip(t, p, "", raw, http.MethodGet)
		if resp.StatusCode != c.status {
			t.Errorf("Via %q: status %d (%q), want %d", c.via, resp.StatusCode, resp.Header.Get("Proxy-Status"), c.status)
		}
	}
	origin.wantSeen(t, "after the Via loops", 2)

	// Had anything gone round, the proxy would have logged it twice. Each
	// line is written once its request is over, so wait for them all.
	requests := len(hosts)*len(proxyKinds) + 4
	waitLogCount(t, p, "access", requests)
	if got := len(accessLines(p)); got != requests {
		t.Errorf("%d access lines for %d requests: something went round", got, requests)
	}
}

package proxy

import (
	"net/netip"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in       string
		defPort  uint16
		wantHost string
		wantPort uint16
		wantIP   bool
		wantErr  bool
	}{
		{"example.com:443", 0, "example.com", 443, false, false},
		{"Example.COM:443", 0, "example.com", 443, false, false},
		{"example.com", 80, "example.com", 80, false, false},
		{"example.com", 0, "", 0, false, true}, // CONNECT needs a port
		{"localhost.:8080", 0, "localhost.", 8080, false, false},
		{"127.0.0.1:80", 0, "127.0.0.1", 80, true, false},
		{"127.1:80", 0, "127.0.0.1", 80, true, false},
		{"2130706433:80", 0, "127.0.0.1", 80, true, false},
		{"0x7f.0.0.1:80", 0, "127.0.0.1", 80, true, false},
		{"0x7f000001:80", 0, "127.0.0.1", 80, true, false},
		{"0177.0.0.1:80", 0, "127.0.0.1", 80, true, false},
		{"127.0.1:80", 0, "127.0.0.1", 80, true, false},
		{"[::1]:443", 0, "::1", 443, true, false},
		{"[::ffff:127.0.0.1]:443", 0, "127.0.0.1", 443, true, false},
		{"[::1]", 443, "::1", 443, true, false},
		{"[fe80::1%25eth0]:80", 0, "", 0, false, true},
		{"256.0.0.1:80", 0, "", 0, false, true},
		{"1.2.3.4.5:80", 0, "", 0, false, true},
		{"0x100000000:80", 0, "", 0, false, true},
		{"user@example.com:80", 0, "", 0, false, true},
		{"example.com:0", 0, "", 0, false, true},
		{"example.com:65536", 0, "", 0, false, true},
		{"example.com:http", 0, "", 0, false, true},
		{"exa mple.com:80", 0, "", 0, false, true},
		{"example.com/path:80", 0, "", 0, false, true},
		{"-:80", 0, "-", 80, false, false},
		{"a..b:80", 0, "", 0, false, true},
		{":80", 0, "", 0, false, true},
		{"", 0, "", 0, false, true},
		{"1.2.3:80", 0, "1.2.0.3", 80, true, false},
		{"v1.example:80", 0, "v1.example", 80, false, false},
		{"example.123abc:80", 0, "example.123abc", 80, false, false},
	}
	for _, tt := range tests {
		got, err := parseAuthority(tt.in, tt.defPort)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseAuthority(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			if err.Status != 400 {
				t.Errorf("parseAuthority(%q) status = %d, want 400", tt.in, err.Status)
			}
			continue
		}
		if got.host != tt.wantHost || got.port != tt.wantPort || got.ip.IsValid() != tt.wantIP {
			t.Errorf("parseAuthority(%q) = %+v, want host %q port %d ip %v", tt.in, got, tt.wantHost, tt.wantPort, tt.wantIP)
		}
	}
}

// FuzzParseAuthority checks that the parser never panics, and that what it
// accepts is canonical: parsing its output again gives the same target.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"example.com:443", "127.1:80", "[::1]:443", "0x7f.1:80", "a.b.c.d:1", "[::ffff:1.2.3.4]:5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAuthority(s, 0)
		if err != nil {
			return
		}
		again, err2 := parseAuthority(got.authority(), 0)
		if err2 != nil || again != got {
			t.Fatalf("%q -> %+v, reparsed %q -> %+v, %v", s, got, got.authority(), again, err2)
		}
		if got.ip.IsValid() && got.ip.Is4In6() {
			t.Fatalf("%q: IPv4-mapped address not unmapped: %v", s, got.ip)
		}
	})
}

func TestClassify(t *testing.T) {
	denied := []string{"127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "100.64.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1", "255.255.255.255", "240.0.0.1",
		"::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
		"::ffff:169.254.169.254", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a00:1::", "::127.0.0.1"}
	for _, s := range denied {
		if Classify(netip.MustParseAddr(s)) == "" {
			t.Errorf("Classify(%s) = public, want denied", s)
		}
	}
	public := []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"}
	for _, s := range public {
		if c := Classify(netip.MustParseAddr(s)); c != "" {
			t.Errorf("Classify(%s) = %q, want public", s, c)
		}
	}
}

// FuzzClassify checks that an IPv4 address and every IPv6 form that embeds
// it (mapped, NAT64, 6to4) are judged alike.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1})
	f.Add([]byte{8, 8, 8, 8})
	f.Add([]byte{169, 254, 169, 254})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 4 {
			return
		}
		v4 := netip.AddrFrom4([4]byte(b))
		want := Classify(v4) == ""
		forms := []netip.Addr{
			netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}),
			netip.AddrFrom16([16]byte{0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}),
			netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: b[0], 3: b[1], 4: b[2], 5: b[3]}),
		}
		for _, a := range forms {
			if got := Classify(a) == ""; got != want {
				t.Fatalf("%v public=%v but %v public=%v", v4, want, a, got)
			}
		}
	})
}

func TestParsePorts(t *testing.T) {
	ps, err := ParsePorts(DefaultPorts)
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]bool{80: true, 443: true, 25: false, 22: false, 1024: false, 1025: true, 65535: true, 8080: true} {
		if ps.Contains(port) != want {
			t.Errorf("Contains(%d) = %v, want %v", port, !want, want)
		}
	}
	for _, bad := range []string{"", "0", "80-70", "x", "1-65536", ","} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
}

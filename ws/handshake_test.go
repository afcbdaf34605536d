package ws

import "testing"

func TestAcceptRFCExample(t *testing.T) {
	// The worked example of RFC 6455 §1.3.
	if got := Accept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("Accept = %q", got)
	}
}

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	if !ValidKey(a) || !ValidKey(b) || a == b {
		t.Fatalf("keys %q %q", a, b)
	}
	for _, bad := range []string{"", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZXg="} {
		if ValidKey(bad) {
			t.Errorf("ValidKey(%q) = true", bad)
		}
	}
}

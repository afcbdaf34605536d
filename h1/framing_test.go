package h1

import (
	"slices"
	"strings"
	"testing"
)

// heads feeds stream to a framer in pieces of size n and returns the
// conflict verdict of every head it found, and whether it still follows.
func heads(stream string, n int) ([]bool, bool) {
	var f framer
	var got []bool
	for len(stream) > 0 {
		k := min(n, len(stream))
		f.feed([]byte(stream[:k]), func(c bool) { got = append(got, c) })
		stream = stream[k:]
	}
	return got, f.state != stDone
}

func TestFramerFindsEveryHead(t *testing.T) {
	tests := []struct {
		name      string
		stream    string
		want      []bool
		following bool
	}{
		{"no body", "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", []bool{false, false}, true},
		{"content-length body with a fake head inside",
			"POST / HTTP/1.1\r\nContent-Length: 43\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nabcd" +
				"GET /2 HTTP/1.1\r\n\r\n", []bool{false, false}, true},
		{"chunked body with trailers",
			"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n" +
				"GET /2 HTTP/1.1\r\n\r\n", []bool{false, false}, true},
		{"both fields", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", []bool{true, false}, true},
		{"both fields, other case and LF only", "POST / HTTP/1.1\ncontent-length: 5\ntransfer-encoding: chunked\n\n0\n\n", []bool{true}, true},
		{"leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\n\r\n", []bool{false}, true},
		{"connect ends the watch", "CONNECT a:443 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", []bool{false}, false},
		{"upgrade ends the watch", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", []bool{false}, false},
		{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", nil, false},
		{"unknown coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", []bool{false}, false},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 3, 7, 1 << 20} {
			got, following := heads(tt.stream, n)
			if !slices.Equal(got, tt.want) || following != tt.following {
				t.Errorf("%s (pieces of %d): heads %v following %v, want %v %v", tt.name, n, got, following, tt.want, tt.following)
			}
		}
	}
}

// FuzzFramer checks that the framer never panics and never reports more
// heads than the stream has request lines.
func FuzzFramer(f *testing.F) {
	f.Add("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
	f.Fuzz(func(t *testing.T, s string) {
		got, _ := heads(s, 5)
		if len(got) > strings.Count(s, "\n") {
			t.Fatalf("%d heads in %d lines", len(got), strings.Count(s, "\n"))
		}
	})
}

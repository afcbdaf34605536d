package ws

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
)

// Version is the only WebSocket version in use (RFC 6455 §4.1).
const Version = "13"

// acceptGUID is the fixed string of RFC 6455 §1.3.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// NewKey returns a fresh Sec-WebSocket-Key: 16 random bytes, base64
// (RFC 6455 §4.1).
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// ValidKey reports whether key is base64 of exactly 16 bytes.
func ValidKey(key string) bool {
	b, err := base64.StdEncoding.DecodeString(key)
	return err == nil && len(b) == 16
}

// Accept computes Sec-WebSocket-Accept for key (RFC 6455 §4.2.2).
func Accept(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

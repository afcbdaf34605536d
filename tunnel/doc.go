// Package tunnel splices two byte streams into one full-duplex tunnel.
//
// It is protocol-neutral: an HTTP/1.1 hijacked connection, an HTTP/2 stream
// and a dialled TCP connection all look like a Conn. A Conn distinguishes a
// clean end of one direction (CloseWrite: TCP FIN, TLS close_notify, HTTP/2
// END_STREAM) from a failure (Abort: TCP RST, RST_STREAM), so that a half-closed
// tunnel keeps flowing the other way and a failure on one side is never
// reported to the other side as a clean end (RFC 9113 §8.5).
//
// Splice (and Go, its form that does not hold the caller) is the only copy
// loop in h2proxy; every tunnel goes through it. An idle tunnel holds no
// copy buffer, and its waiting goroutines have the runtime's smallest
// stack.
package tunnel

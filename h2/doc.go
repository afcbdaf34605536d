// Package h2 owns HTTP/2 specifics of the proxy front end: the server's
// HTTP/2 settings and the adapter that turns a CONNECT stream into a
// tunnel.Conn (RFC 9113 §8.5, RFC 8441).
//
// Everything that knows how the HTTP/2 server is implemented stays in this
// package, so that proxy sees only an http.Handler, Accept and Configure.
package h2

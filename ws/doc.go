// Package ws translates WebSocket handshakes between HTTP/1.1 Upgrade
// (RFC 6455 §4) and HTTP/2 extended CONNECT (RFC 8441 §4-5): keys, accept
// values, versions, subprotocols and extensions. It opens no sockets and
// never parses WebSocket frames: after the handshake, h2proxy only relays
// bytes.
package ws

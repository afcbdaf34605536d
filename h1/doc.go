// Package h1 owns HTTP/1.1 specifics of the proxy: taking over the
// connection of an accepted CONNECT or Upgrade (with the bytes the client
// already sent), closing the connection after a refusal, and the
// request/response exchange on a dialled upstream connection for Upgrade.
package h1

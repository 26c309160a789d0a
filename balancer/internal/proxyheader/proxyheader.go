// Package proxyheader writes PROXY protocol headers (v1 text, v2 binary)
// towards backends with github.com/pires/go-proxyproto, the implementation
// most Go servers use to read them, so what is written is what they parse.
package proxyheader

import (
	"fmt"
	"io"
	"net"

	"github.com/pires/go-proxyproto"
)

// Write sends the header that tells the backend the client's address (src)
// and the address the client connected to (dst).
func Write(w io.Writer, version int, src, dst net.Addr) error {
	h := proxyproto.HeaderProxyFromAddrs(byte(version), src, dst)
	if _, err := h.WriteTo(w); err != nil {
		return fmt.Errorf("send PROXY protocol v%d header: %w", version, err)
	}
	return nil
}

// WriteLocal sends a LOCAL header (v1: PROXY UNKNOWN): a connection of
// the balancer's own, a health check, that carries no client.
func WriteLocal(w io.Writer, version int) error {
	h := &proxyproto.Header{Version: byte(version), Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if _, err := h.WriteTo(w); err != nil {
		return fmt.Errorf("send PROXY protocol v%d header: %w", version, err)
	}
	return nil
}

package checker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// maxDatagram is the largest UDP payload over IPv4 and IPv6 alike.
const maxDatagram = 65535

// udpProber passes when a datagram sent to the address gets a reply, which
// must contain expect if expect is set. UDP has no connection, so the reply
// is the only proof the service is there; an ICMP port unreachable fails
// the check at once, and silence fails it at the timeout.
type udpProber struct {
	address string
	payload []byte
	expect  []byte
}

func newUDPProber(check *pb.Check) (prober, error) {
	if err := onlyFor(check, ProtocolUDP); err != nil {
		return nil, err
	}
	if err := hostPort(check.GetAddress()); err != nil {
		return nil, err
	}
	if n := len(check.GetUdp().GetPayload()); n > maxDatagram {
		return nil, fmt.Errorf("payload of %d bytes is more than a datagram holds (%d)", n, maxDatagram)
	}
	return &udpProber{
		address: check.GetAddress(),
		payload: bytes.Clone(check.GetUdp().GetPayload()),
		expect:  bytes.Clone(check.GetUdp().GetExpect()),
	}, nil
}

func (p *udpProber) Probe(ctx context.Context) (string, error) {
	start := time.Now()
	c, err := dialer(ctx).DialContext(ctx, "udp", p.address)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// A cancellation (Close, a new Configure) ends the wait for a reply
	// too, not only the deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	if _, err := c.Write(p.payload); err != nil {
		return "", fmt.Errorf("udp %s: send: %w", p.address, err)
	}
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "", fmt.Errorf("udp %s: port unreachable (connection refused)", p.address)
	case err != nil && timedOut(ctx, err):
		return "", fmt.Errorf("udp %s: no reply within %s", p.address, time.Since(start).Round(time.Millisecond))
	case err != nil:
		return "", fmt.Errorf("udp %s: %w", p.address, err)
	}
	if len(p.expect) > 0 && !bytes.Contains(buf[:n], p.expect) {
		return "", fmt.Errorf("udp %s: reply %q lacks %q", p.address, clean(string(buf[:min(n, 64)]), 64), p.expect)
	}
	return "", nil
}

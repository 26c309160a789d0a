package checker

import (
	"context"
	"fmt"
	"net"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// prober runs one configured check once. Probe must return by the time ctx
// ends; the caller puts the check's timeout on ctx.
type prober interface {
	Probe(ctx context.Context) error
}

// newProber builds the prober of one check, refusing settings its type
// cannot use. It runs at Configure time so a bad config fails there and not
// at every round.
type newProber func(check *pb.Check) (prober, error)

// defaultProbers is the registry of built-in check types, keyed by
// pb.Check.protocol. A new type is one prober plus one line here.
var defaultProbers = map[string]newProber{
	"tcp": newTCPProber,
}

// tcpProber passes when a TCP connection to the address opens.
type tcpProber struct {
	address string
}

func newTCPProber(check *pb.Check) (prober, error) {
	if _, _, err := net.SplitHostPort(check.GetAddress()); err != nil {
		return nil, fmt.Errorf("address %q: %w", check.GetAddress(), err)
	}
	return &tcpProber{address: check.GetAddress()}, nil
}

func (p *tcpProber) Probe(ctx context.Context) error {
	// A Dialer with DialContext is net.DialTimeout plus cancellation: the
	// deadline on ctx is the check's timeout, and Close or a new Configure
	// cancels a connect in flight instead of waiting it out.
	var d net.Dialer
	if dl, ok := ctx.Deadline(); ok {
		d.Timeout = time.Until(dl)
	}
	c, err := d.DialContext(ctx, "tcp", p.address)
	if err != nil {
		// Already "dial tcp <address>: <reason>".
		return err
	}
	return c.Close()
}

package checker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
	"unicode/utf8"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// prober runs one configured check once. Probe must return by the time ctx
// ends, or very soon after (an exec check still kills and reaps its process
// group); the caller puts the check's timeout on ctx. output is what the
// check has to show besides its error (an exec check's output), or "".
type prober interface {
	Probe(ctx context.Context) (output string, err error)
}

// newProber builds the prober of one check, refusing settings its type
// cannot use. It runs at Configure time so a bad config fails there and not
// at every round.
type newProber func(check *pb.Check) (prober, error)

// Built-in check types, the values of pb.Check.protocol.
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTPS = "https"
	ProtocolUDP   = "udp"
	ProtocolExec  = "exec"
)

// defaultProbers is the registry of built-in check types, keyed by
// pb.Check.protocol. A new type is one prober plus one line here.
var defaultProbers = map[string]newProber{
	ProtocolTCP:   newTCPProber,
	ProtocolHTTP:  newHTTPProber(ProtocolHTTP),
	ProtocolHTTPS: newHTTPProber(ProtocolHTTPS),
	ProtocolUDP:   newUDPProber,
	ProtocolExec:  newExecProber,
}

// MaxOutput is how much of an exec check's output is kept for the status
// and CheckResult.output; the rest is read and dropped.
const MaxOutput = 512

// maxError bounds an error message in results, logs and status: some come
// with a peer's bytes in them.
const maxError = 512

// onlyFor refuses the settings of other check types, so that a setting the
// check cannot use is an error and not silently ignored.
func onlyFor(check *pb.Check, protocol string) error {
	var other []string
	if check.GetHttp() != nil && protocol != ProtocolHTTP && protocol != ProtocolHTTPS {
		other = append(other, "http")
	}
	if check.GetUdp() != nil && protocol != ProtocolUDP {
		other = append(other, "udp")
	}
	if check.GetExec() != nil && protocol != ProtocolExec {
		other = append(other, "exec")
	}
	if len(other) > 0 {
		return fmt.Errorf("has %s settings, which a %s check does not use", strings.Join(other, " and "), protocol)
	}
	return nil
}

// hostPort checks an address that a network check connects to.
func hostPort(address string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("address %q: %w", address, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("address %q: want host:port", address)
	}
	return nil
}

// dialer is a net.Dialer bounded by ctx's deadline: the deadline is the
// check's timeout, and Close or a new Configure cancels a connect in flight
// instead of waiting it out.
func dialer(ctx context.Context) *net.Dialer {
	var d net.Dialer
	if dl, ok := ctx.Deadline(); ok {
		d.Timeout = time.Until(dl)
	}
	return &d
}

// tcpProber passes when a TCP connection to the address opens.
type tcpProber struct {
	address string
}

func newTCPProber(check *pb.Check) (prober, error) {
	if err := onlyFor(check, ProtocolTCP); err != nil {
		return nil, err
	}
	if err := hostPort(check.GetAddress()); err != nil {
		return nil, err
	}
	return &tcpProber{address: check.GetAddress()}, nil
}

func (p *tcpProber) Probe(ctx context.Context) (string, error) {
	c, err := dialer(ctx).DialContext(ctx, "tcp", p.address)
	if err != nil {
		// Already "dial tcp <address>: <reason>".
		return "", err
	}
	return "", c.Close()
}

// clean makes s fit for a result: valid UTF-8 (proto3 strings must be, or
// the gRPC stream to the supervisor fails), no surrounding space, and at
// most limit bytes, cut at a character boundary.
func clean(s string, limit int) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// timedOut tells whether err is the end of the check's time (or a
// cancellation), as opposed to a failure the peer caused.
func timedOut(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

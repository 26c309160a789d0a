// Package proxy holds the balancer's data paths, one handler per load
// balancer type: tcp (tcpserver.go, a connection as two ends and two
// directions in tcpconn.go), udp (per-client sessions, udp.go, batched
// reads in mmsg.go) and http (an HTTP/1.x reverse proxy: httpserver.go;
// a client connection's state machine in httpconn.go, its request going
// up in httprequest.go and its answer coming back in httpresponse.go,
// the answers the proxy gives itself in httperror.go, backends' keep-alive
// pools in httppool.go). They run on the event loops of internal/reactor,
// parse with internal/httpwire, and ask internal/policy for a backend.
package proxy

import (
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
)

// Env is what every server of a balancer shares: its event loops and its
// balancing policy (whose Log the servers log to).
type Env struct {
	Loops *reactor.Group
	*policy.Judge
}

// Server serves one load balancer type on a frontend's socket.
type Server interface {
	// Current is the load balancer served now.
	Current() *policy.LoadBalancer
	// Compatible says whether lb can be swapped in by update, or needs a
	// new server on the socket.
	Compatible(lb *policy.LoadBalancer) bool
	Update(lb *policy.LoadBalancer)
	// Stop ends accepting clients and returns once the accept loop has;
	// the socket stays open.
	Stop()
	// Drain waits for the clients to leave until deadline, then cuts those
	// left, and returns once every goroutine of the server is done.
	Drain(deadline time.Time)
	// Clients is how many connections (udp: sessions) are open.
	Clients() int
}

package elector

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// tcpStream is raft's StreamLayer over plain TCP, advertising the
// configured member address rather than the listener's.
type tcpStream struct {
	net.Listener
	adv net.Addr
}

func (s *tcpStream) Addr() net.Addr { return s.adv }

func (s *tcpStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", string(address))
}

// newTransport listens on the member address, with TLS when tlsCfg is set,
// and wraps raft's network transport in a trackedTransport.
func newTransport(addr string, tlsCfg *tlsConfig, hb time.Duration, log hclog.Logger) (*trackedTransport, error) {
	adv, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve raft address %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	var stream raft.StreamLayer = &tcpStream{Listener: ln, adv: adv}
	if tlsCfg != nil {
		stream = newTLSStream(ln, adv, tlsCfg)
	}
	// Spares (spare.go) are opened below the hello mux: a hello may take
	// one too, which the other side reads like any connection.
	spare := newSpareStream(stream)
	// The same port answers the hellos of members that join (join.go).
	mux := &muxStream{StreamLayer: spare}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  mux,
		MaxPool: transportMaxPool,
		Timeout: TransportTimeout(hb),
		Logger:  log,
	})
	t := newTrackedTransport(nt, hb)
	t.tls = tlsCfg != nil
	t.stream = mux
	t.spare = spare
	return t, nil
}

// errStaleTermHeartbeat keeps raft's heartbeat loop from counting an answer
// from a member that is already in a newer term as contact (raft's own
// heartbeat loop does not look at the answer's term, only the replication
// loop does), so such an answer cannot extend a stale leader's lease.
var errStaleTermHeartbeat = errors.New("heartbeat answered from a newer term")

// errNotVoting answers pre-votes and votes during the start-up quarantine.
// It must not contain raft's "unexpected command", which a candidate would
// count as a granted pre-vote.
var errNotVoting = errors.New("member just started: not voting until one heartbeat timeout has passed")

// errNotFromLeader answers a TimeoutNow (a leadership transfer's order to
// stand for election now) from any member but the leader this one follows.
// raft's TimeoutNow carries no term: one that a dead leader's kernel
// retransmits when a cut link comes back would otherwise start a vote that
// the live leader must grant (a transfer's vote bypasses "we have a
// leader"), and move the VIP for nothing.
var errNotFromLeader = errors.New("leadership transfer not from the leader this member follows")

// peerState is what the leader learned of one peer from its AppendEntries
// answers.
type peerState struct {
	lastOK  time.Time // last answer in our term
	okSince time.Time // start of the current run of answers without a gap
	lastLog uint64    // the peer's last log index in that answer
	fails   int       // failed RPCs since lastOK
}

// trackedTransport is raft's NetworkTransport with three additions: it
// records, per peer, when AppendEntries last succeeded and how far the
// peer's log is (for choosing a transfer target and for preemption); it
// refuses stale-term heartbeat answers; and it refuses votes for one
// heartbeat timeout after start.
type trackedTransport struct {
	*raft.NetworkTransport
	stream  *muxStream
	spare   *spareStream
	tls     bool
	hb      time.Duration
	started time.Time
	rpcs    chan raft.RPC
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	peers map[raft.ServerID]*peerState
	// leader is raft's LeaderWithID once raft runs, for refuseTransfer.
	leader func() (raft.ServerAddress, raft.ServerID)
	// quarantined counts votes refused in the start-up quarantine.
	quarantined int
	// heardLeader is when an AppendEntries of the newest term seen so far
	// (heardTerm) last arrived: contact with a leader, which raft's own
	// LastContact does not tell apart from granting a vote.
	heardLeader time.Time
	heardTerm   uint64
}

func newTrackedTransport(nt *raft.NetworkTransport, hb time.Duration) *trackedTransport {
	t := &trackedTransport{
		NetworkTransport: nt,
		hb:               hb,
		started:          time.Now(),
		rpcs:             make(chan raft.RPC),
		stop:             make(chan struct{}),
		done:             make(chan struct{}),
		peers:            map[raft.ServerID]*peerState{},
	}
	go t.relay()
	return t
}

// Consumer is the channel raft reads incoming RPCs from.
func (t *trackedTransport) Consumer() <-chan raft.RPC { return t.rpcs }

// relay hands incoming RPCs to raft, answering votes itself during the
// quarantine.
func (t *trackedTransport) relay() {
	defer close(t.done)
	in := t.NetworkTransport.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-t.stop:
			return
		}
		if t.refuseVote(rpc) {
			rpc.Respond(nil, errNotVoting)
			continue
		}
		if t.refuseTransfer(rpc) {
			rpc.Respond(nil, errNotFromLeader)
			continue
		}
		t.noteLeaderContact(rpc)
		select {
		case t.rpcs <- rpc:
		case <-t.stop:
			rpc.Respond(nil, raft.ErrTransportShutdown)
			return
		}
	}
}

// refuseVote is true for a pre-vote or vote (other than one of a leadership
// transfer) that arrives within one heartbeat timeout of start: this member
// may have heard from a live leader just before it restarted, and raft
// would have refused to vote then.
func (t *trackedTransport) refuseVote(rpc raft.RPC) bool {
	if time.Since(t.started) >= t.hb {
		return false
	}
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		if req.LeadershipTransfer {
			return false
		}
	case *raft.RequestPreVoteRequest:
	default:
		return false
	}
	t.mu.Lock()
	t.quarantined++
	t.mu.Unlock()
	return true
}

// noteLeaderContact records an AppendEntries as contact with a leader
// unless its term is older than one already heard (a deposed leader's).
func (t *trackedTransport) noteLeaderContact(rpc raft.RPC) {
	req, ok := rpc.Command.(*raft.AppendEntriesRequest)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if req.Term >= t.heardTerm {
		t.heardTerm, t.heardLeader = req.Term, time.Now()
	}
}

// lastLeaderContact is when an AppendEntries from a current leader last
// arrived (zero: never).
func (t *trackedTransport) lastLeaderContact() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.heardLeader
}

// followLeader gives the transport raft's view of the leader.
func (t *trackedTransport) followLeader(leader func() (raft.ServerAddress, raft.ServerID)) {
	t.mu.Lock()
	t.leader = leader
	t.mu.Unlock()
}

// refuseTransfer is true for a TimeoutNow from anyone but the leader this
// member follows (see errNotFromLeader).
func (t *trackedTransport) refuseTransfer(rpc raft.RPC) bool {
	req, ok := rpc.Command.(*raft.TimeoutNowRequest)
	if !ok {
		return false
	}
	t.mu.Lock()
	leader := t.leader
	t.mu.Unlock()
	if leader == nil {
		return false
	}
	addr, id := leader()
	if len(req.ID) > 0 {
		return id == "" || raft.ServerID(req.ID) != id
	}
	return addr == "" || raft.ServerAddress(req.Addr) != addr
}

// AppendEntriesPipeline turns pipelining off: raft then replicates with
// one RPC at a time, whose errors it checks. Its pipeline decoder counts
// every answer as contact, even one that failed (a read timeout), which
// would let a leader cut off from its followers keep its lease for up to
// two commit timeouts and a transport timeout longer. Nothing but no-op
// entries is ever replicated here, so pipelining buys nothing.
func (t *trackedTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// isHeartbeat tells raft's heartbeat requests from replication: only they
// carry no entries and no previous entry.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return len(a.Entries) == 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && a.LeaderCommitIndex == 0
}

// AppendEntries sends one AppendEntries and records the outcome.
func (t *trackedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[id]
	if p == nil {
		p = &peerState{}
		t.peers[id] = p
	}
	switch {
	case err != nil:
		p.fails++
		p.okSince = time.Time{}
		return err
	case resp.Term > args.Term:
		p.fails++
		p.okSince = time.Time{}
		if isHeartbeat(args) {
			return errStaleTermHeartbeat
		}
		return nil // raft's replication loop sees the term and steps down
	}
	// A gap longer than the lease is an outage, even without a failed RPC.
	if p.okSince.IsZero() || now.Sub(p.lastOK) > t.hb/2 {
		p.okSince = now
	}
	p.lastOK, p.lastLog, p.fails = now, resp.LastLog, 0
	return nil
}

// peer returns a copy of what is known of id.
func (t *trackedTransport) peer(id raft.ServerID) peerState {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.peers[id]; p != nil {
		return *p
	}
	return peerState{}
}

// restartStreak makes id count as healthy only from now on (after a failed
// handover to it, so it is not proposed again at once).
func (t *trackedTransport) restartStreak(id raft.ServerID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.peers[id]; p != nil && !p.okSince.IsZero() {
		p.okSince = time.Now()
	}
}

func (t *trackedTransport) refusedVotes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.quarantined
}

// Close stops the relay and the network transport; raft's Shutdown calls
// it too.
func (t *trackedTransport) Close() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		err = t.NetworkTransport.Close()
		<-t.done
	})
	return err
}

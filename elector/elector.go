// Package elector runs one keep-vip member's Raft node. Nothing is
// replicated: the FSM is a no-op and leadership is the product, reported
// through Watch, Status and Prometheus metrics.
//
// A new cluster bootstraps the config file's member list on first start; a
// new member of a running cluster waits to be added (join.go). After that the
// leader keeps Raft's configuration in line with the file (reconcile.go).
// Term, vote and log live in a bolt file in the data dir so a restarted
// member never votes twice in a term.
package elector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.etcd.io/bbolt"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/limits"
)

// StoreFile is the bolt file in the data dir holding the Raft log, term and vote.
const StoreFile = "raft.db"

const (
	// pollInterval is the safety net under the Raft observer, which drops
	// observations when its buffer is full and reports no term changes of
	// a candidate.
	pollInterval = 100 * time.Millisecond
	// observerBuffer is large enough for a burst of transitions; a drop is
	// caught by the next poll.
	observerBuffer = 64
)

// storeOpenTimeout bounds the wait for the bolt file lock, so a data dir held
// by another process is an error instead of a hang. A var for the tests.
var storeOpenTimeout = 3 * time.Second

var (
	// ErrAlreadyConfigured is returned by a second Configure.
	ErrAlreadyConfigured = errors.New("elector already configured")
	// ErrClosed is returned by Configure after Close.
	ErrClosed = errors.New("elector closed")
)

// Elector implements rpc.Elector with hashicorp/raft.
type Elector struct {
	log zerolog.Logger
	met *metrics

	// mu serialises Configure and Close.
	mu       sync.Mutex
	closed   bool
	closeErr error

	// node is the running Raft node; nil until Configure succeeds. Read
	// without mu by Watch, Status, TransferLeadership and the metrics.
	node atomic.Pointer[node]

	// The published leadership that watchers fan out from.
	pubMu   sync.Mutex
	cur     leadership
	ver     uint64        // 0 while nothing is published
	changed chan struct{} // closed and replaced at every publish
	final   bool          // set by Close: cur is the last one
}

var _ rpc.Elector = (*Elector)(nil)

// New returns an unconfigured Elector logging to log.
func New(log zerolog.Logger) *Elector {
	e := &Elector{
		log:     log.With().Str("component", "elector").Logger(),
		changed: make(chan struct{}),
	}
	e.met = newMetrics(func() float64 {
		if n := e.node.Load(); n != nil {
			return lastContactSeconds(n.r)
		}
		return lastContactSeconds(nil)
	})
	return e
}

// node is one configured Raft instance and what it was built from.
type node struct {
	cfg       *pb.ElectorConfig
	localID   string
	localAddr string
	// mem is the file's member list; swapped whole by a reload.
	mem            atomic.Pointer[memberSet]
	membersChanged chan struct{} // a reload changed mem
	// sawCluster: a member without Raft state heard from an existing
	// cluster, so it waits to be added and never bootstraps (join.go).
	sawCluster atomic.Bool
	t          timings
	started    time.Time

	preemptDelay time.Duration

	r     *raft.Raft
	trans *trackedTransport
	store *raftboltdb.BoltStore
	obs   *raft.Observer
	obsCh chan raft.Observation

	stop          chan struct{} // closed to end the monitor, detector, reconciler and join loop
	monitorDone   chan struct{}
	detectDone    chan struct{}
	reconcileDone chan struct{}
	joinDone      chan struct{}

	// Set by the monitor when this member becomes leader: when, and when it
	// had last heard from a leader before (zero: never), for the
	// supervisor's failover measurement.
	leadMu          sync.Mutex
	leaderSince     time.Time
	leaderSinceTerm uint64
	contactBefore   time.Time
	// leaderUntil is when the monitor last saw this member stop leading.
	leaderUntil time.Time
	wasLeader   bool
	// stall runs while this member leads (stall.go).
	stall *stallWatch
}

// timings are the Raft timeouts after defaults.
type timings struct {
	heartbeat, election, lease time.Duration
}

// transport is the RPC timeout derived from the heartbeat timeout.
func (t timings) transport() time.Duration { return TransportTimeout(t.heartbeat) }

// validate checks cfg and returns the member addresses by id and the timings.
func validate(cfg *pb.ElectorConfig) (map[string]string, timings, error) {
	var t timings
	if cfg == nil {
		return nil, t, errors.New("no elector config")
	}
	if cfg.GetLocalId() == "" {
		return nil, t, errors.New("local_id is empty")
	}
	if len(cfg.GetMembers()) == 0 {
		return nil, t, errors.New("no members")
	}
	if cfg.GetDataDir() == "" {
		return nil, t, errors.New("data_dir is empty")
	}
	addrs := make(map[string]string, len(cfg.GetMembers()))
	seenAddr := make(map[string]string, len(cfg.GetMembers()))
	for i, m := range cfg.GetMembers() {
		if m.GetId() == "" {
			return nil, t, fmt.Errorf("member %d has an empty id", i)
		}
		if _, dup := addrs[m.GetId()]; dup {
			return nil, t, fmt.Errorf("member id %q appears twice", m.GetId())
		}
		if _, _, err := net.SplitHostPort(m.GetAddress()); err != nil {
			return nil, t, fmt.Errorf("member %q address %q: %w", m.GetId(), m.GetAddress(), err)
		}
		if other, dup := seenAddr[m.GetAddress()]; dup {
			return nil, t, fmt.Errorf("members %q and %q share address %s", other, m.GetId(), m.GetAddress())
		}
		addrs[m.GetId()] = m.GetAddress()
		seenAddr[m.GetAddress()] = m.GetId()
	}
	if _, ok := addrs[cfg.GetLocalId()]; !ok {
		return nil, t, fmt.Errorf("local_id %q is not among the members", cfg.GetLocalId())
	}
	ms := func(name string, v int64, def time.Duration) (time.Duration, error) {
		switch {
		case v < 0:
			return 0, fmt.Errorf("%s is negative (%d)", name, v)
		case v == 0:
			return def, nil
		}
		return time.Duration(v) * time.Millisecond, nil
	}
	var err error
	if t.heartbeat, err = ms("heartbeat_timeout_ms", cfg.GetHeartbeatTimeoutMs(), DefaultHeartbeatTimeout); err != nil {
		return nil, t, err
	}
	if t.election, err = ms("election_timeout_ms", cfg.GetElectionTimeoutMs(), DefaultElectionTimeout(t.heartbeat)); err != nil {
		return nil, t, err
	}
	if t.lease, err = ms("leader_lease_timeout_ms", cfg.GetLeaderLeaseTimeoutMs(), DefaultLeaderLeaseTimeout(t.heartbeat)); err != nil {
		return nil, t, err
	}
	if _, err = ms("preempt_delay_ms", cfg.GetPreemptDelayMs(), DefaultPreemptDelay); err != nil {
		return nil, t, err
	}
	// The rules the supervisor checks the file with (timing.go says why).
	if err := limits.CheckRaftTimings(t.heartbeat, t.election, t.lease, timingFields); err != nil {
		return nil, t, err
	}
	return addrs, t, nil
}

// timingFields are the Raft timeouts' ElectorConfig fields.
var timingFields = limits.RaftTimingKeys{Heartbeat: "heartbeat_timeout_ms", Election: "election_timeout_ms", Lease: "leader_lease_timeout_ms"}

// Validate is the Validate RPC: cfg checked as Configure would (TLS
// contents included), with no Raft node or store touched.
func (e *Elector) Validate(_ context.Context, cfg *pb.ElectorConfig) error {
	if _, _, err := validate(cfg); err != nil {
		return err
	}
	if cfg.GetTls() != nil {
		if _, err := parseTLS(cfg.GetTls()); err != nil {
			return err
		}
	}
	return nil
}

// Configure starts this member's Raft node. It may be called once; after a
// failed call it may be called again.
func (e *Elector) Configure(ctx context.Context, cfg *pb.ElectorConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	addrs, t, err := validate(cfg)
	if err != nil {
		return fmt.Errorf("elector config: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if n := e.node.Load(); n != nil {
		return e.updateMembers(n, cfg)
	}
	n, err := e.start(cfg, addrs, t)
	if err != nil {
		return err
	}
	e.node.Store(n)
	e.publish(n.leadership())
	go e.monitor(n)
	go e.detect(n)
	go e.reconcile(n)
	if n.hasConfiguration() {
		close(n.joinDone)
	} else {
		go e.join(n)
	}
	e.log.Info().Str("cluster", cfg.GetCluster()).Str("local_id", n.localID).Str("address", n.localAddr).
		Int("members", len(addrs)).Bool("tls", cfg.GetTls() != nil && len(cfg.GetTls().GetCertPem()) > 0).
		Dur("heartbeat_timeout", t.heartbeat).Dur("election_timeout", t.election).Dur("leader_lease_timeout", t.lease).
		Dur("transport_timeout", t.transport()).Bool("preempt", cfg.GetPreempt()).Msg("raft started")
	return nil
}

// start opens the store and transport, bootstraps a fresh data dir and
// starts Raft; on error it leaves nothing open.
func (e *Elector) start(cfg *pb.ElectorConfig, addrs map[string]string, t timings) (_ *node, err error) {
	n := &node{
		cfg:            cfg,
		localID:        cfg.GetLocalId(),
		localAddr:      addrs[cfg.GetLocalId()],
		membersChanged: make(chan struct{}, 1),
		t:              t,
		started:        time.Now(),
		preemptDelay:   DefaultPreemptDelay,
		obsCh:          make(chan raft.Observation, observerBuffer),
		stop:           make(chan struct{}),
		monitorDone:    make(chan struct{}),
		detectDone:     make(chan struct{}),
		reconcileDone:  make(chan struct{}),
		joinDone:       make(chan struct{}),
	}
	n.mem.Store(newMemberSet(cfg.GetMembers()))
	if d := cfg.GetPreemptDelayMs(); d > 0 {
		n.preemptDelay = time.Duration(d) * time.Millisecond
	}
	tlsCfg, err := parseTLS(cfg.GetTls())
	if err != nil {
		return nil, err
	}
	// Tag Raft's own lines too: in tests several members share a process.
	log := e.log.With().Str("local_id", n.localID).Logger()
	dir := cfg.GetDataDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, StoreFile)
	n.store, err = raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: storeOpenTimeout},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("open raft store %s: locked by another process for %s: %w", path, storeOpenTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open raft store %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			n.store.Close()
		}
	}()

	// Advertise the configured address: the listener's own address is the
	// wildcard-free one only if the member address is an IP.
	n.trans, err = newTransport(n.localAddr, tlsCfg, t.heartbeat, rpc.HCLog(log, "raft-net"))
	if err != nil {
		return nil, fmt.Errorf("listen raft on %s: %w", n.localAddr, err)
	}
	defer func() {
		if err != nil {
			n.trans.Close()
		}
	}()

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.localID)
	rc.HeartbeatTimeout = t.heartbeat
	rc.ElectionTimeout = t.election
	rc.LeaderLeaseTimeout = t.lease
	rc.CommitTimeout = DefaultCommitTimeout
	// Never snapshot on our own: the log only grows by one no-op per
	// election and one entry per membership change. The only snapshot is
	// the one `recover` writes (recover.go).
	rc.SnapshotThreshold = math.MaxUint64
	rc.Logger = rpc.HCLog(log, "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config for %s: %w", n.localID, err)
	}

	snaps, err := openSnapshots(dir, log)
	if err != nil {
		return nil, err
	}
	// Without state, Raft starts with no configuration: the join loop
	// decides whether to bootstrap or wait to be added (join.go).
	n.r, err = raft.NewRaft(rc, nopFSM{}, n.store, n.store, snaps, n.trans)
	if err != nil {
		return nil, fmt.Errorf("start raft on %s: %w", n.localAddr, err)
	}
	answer := n.answerHello
	n.trans.stream.hello.Store(&answer)
	n.trans.followLeader(n.r.LeaderWithID)
	n.obs = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.RaftState, raft.LeaderObservation:
			return true
		}
		return false
	})
	n.r.RegisterObserver(n.obs)
	return n, nil
}

// monitor publishes n's leadership at every observation and every poll.
// Observations only say "look now": the state is read from Raft itself, so
// a dropped or stale observation costs at most one poll interval.
func (e *Elector) monitor(n *node) {
	defer close(n.monitorDone)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	defer n.endStallWatch()
	for {
		select {
		case <-n.stop:
			return
		case <-n.obsCh:
		case <-tick.C:
		}
		l := n.leadership()
		if l.role == pb.Role_ROLE_LEADER {
			n.noteLeading()
		} else if stalled, was := n.noteNotLeading(); was {
			e.logSteppedDown(n, l, stalled)
		}
		e.publish(l)
	}
}

// noteLeading records when this member became leader and when it had last
// heard from the leader before it; called at every observation, it only
// records the first one of a leadership.
func (n *node) noteLeading() {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	if !n.leaderSince.IsZero() && n.leaderSinceTerm == n.r.CurrentTerm() {
		return
	}
	n.leaderSince, n.leaderSinceTerm = time.Now(), n.r.CurrentTerm()
	n.wasLeader = true
	if n.stall == nil {
		n.stall = newStallWatch(n.t.lease)
	}
	// The previous leader was last heard from either by its AppendEntries
	// or, if it was this member, when it stopped leading. raft's
	// LastContact is not used: it also moves when this member grants a
	// vote, which would make a failover after a split vote look shorter.
	n.contactBefore = n.trans.lastLeaderContact()
	if n.leaderUntil.After(n.contactBefore) {
		n.contactBefore = n.leaderUntil
	}
}

// noteNotLeading records when this member stopped leading, the start of
// the failover if it is elected again. was is whether it led until now;
// stalled is then the longest time the elector was not scheduled shortly
// before (stall.go).
func (n *node) noteNotLeading() (stalled time.Duration, was bool) {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	if !n.wasLeader {
		return 0, false
	}
	n.wasLeader, n.leaderUntil = false, time.Now()
	if n.stall != nil {
		stalled = n.stall.end()
		n.stall = nil
	}
	return stalled, true
}

// endStallWatch stops the stall watch of a node that stops while leading.
func (n *node) endStallWatch() {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	if n.stall != nil {
		n.stall.end()
		n.stall = nil
	}
}

// logSteppedDown says that this member stopped leading and for how long it
// had not been scheduled just before: a stall of half a lease or more is
// the likely cause of a lease step-down (raft's own line says "failed to
// contact quorum of nodes, stepping down"), a warning: the host starved
// the elector, the network may well be fine.
func (e *Elector) logSteppedDown(n *node, l leadership, stalled time.Duration) {
	ev := e.log.Info()
	msg := "stopped leading"
	if stalled >= n.t.lease/2 {
		ev, msg = e.log.Warn(), "stopped leading after being descheduled"
	}
	ev.Str("local_id", n.localID).Str("role", rpc.RoleName(l.role)).Uint64("term", l.term).
		Dur("stalled_ms", stalled).Dur("lease_ms", n.t.lease).Msg(msg)
}

// leadership is a comparable snapshot of pb.Leadership.
type leadership struct {
	role          pb.Role
	term          uint64
	leaderID      string
	leaderAddress string
}

func (l leadership) proto() *pb.Leadership {
	return &pb.Leadership{Role: l.role, Term: l.term, LeaderId: l.leaderID, LeaderAddress: l.leaderAddress}
}

func roleOf(s raft.RaftState) pb.Role {
	switch s {
	case raft.Follower:
		return pb.Role_ROLE_FOLLOWER
	case raft.Candidate:
		return pb.Role_ROLE_CANDIDATE
	case raft.Leader:
		return pb.Role_ROLE_LEADER
	case raft.Shutdown:
		return pb.Role_ROLE_SHUTDOWN
	}
	return pb.Role_ROLE_UNSPECIFIED
}

// leadership reads n's current leadership. The leader address is the
// configured one (Raft knows the resolved one) so it matches the config.
func (n *node) leadership() leadership {
	l := leadership{role: roleOf(n.r.State()), term: n.r.CurrentTerm()}
	addr, id := n.r.LeaderWithID()
	l.leaderID, l.leaderAddress = string(id), string(addr)
	if a, ok := n.members().addrs[l.leaderID]; ok {
		l.leaderAddress = a
	}
	return l
}

// publish makes l the current leadership unless it is already.
func (e *Elector) publish(l leadership) {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	if e.final || (e.ver != 0 && l == e.cur) {
		return
	}
	if n := e.node.Load(); e.ver != 0 && n != nil {
		e.log.Info().Str("local_id", n.localID).Str("role", rpc.RoleName(l.role)).Uint64("term", l.term).Str("leader", l.leaderID).
			Str("from_role", rpc.RoleName(e.cur.role)).Msg("leadership changed")
	}
	e.cur = l
	e.ver++
	e.met.update(l)
	close(e.changed)
	e.changed = make(chan struct{})
}

// publishFinal publishes l as the last leadership and ends every Watch.
func (e *Elector) publishFinal(l leadership) {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	if e.final {
		return
	}
	if e.ver == 0 || l != e.cur {
		e.cur = l
		e.ver++
		e.met.update(l)
	}
	e.final = true
	close(e.changed)
	e.changed = make(chan struct{})
}

// Watch sends the current leadership and then every change until ctx ends
// (it returns ctx.Err()), send fails, or the Elector is closed (it returns
// nil after sending the SHUTDOWN leadership). Before Configure it waits.
// A slow watcher gets the latest leadership, not every intermediate one:
// what matters to a VIP holder is the state now, and the term shows that
// something happened in between.
func (e *Elector) Watch(ctx context.Context, send func(*pb.Leadership) error) error {
	var sent uint64
	var last leadership
	for {
		e.pubMu.Lock()
		cur, ver, changed, final := e.cur, e.ver, e.changed, e.final
		e.pubMu.Unlock()
		// A change and its undoing, both published while this watcher
		// was sending, leave it what it has already: not sent again.
		if ver != sent && (sent == 0 || cur != last) {
			if err := send(cur.proto()); err != nil {
				return fmt.Errorf("send leadership: %w", err)
			}
			last = cur
		}
		sent = ver
		if final {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// TransferLeadership hands leadership to target, or when target is empty
// to the member pickTarget chooses, and waits (bounded by ctx) until this
// member has stepped down. A member that does not lead, or leads alone, has
// nothing to hand over and returns nil; a leader with no other member in
// contact returns ErrNoTarget at once instead of trying a dead member.
func (e *Elector) TransferLeadership(ctx context.Context, target string) error {
	n := e.node.Load()
	if n == nil || n.r.State() != raft.Leader || len(n.voters()) < 2 {
		return nil
	}
	if target == "" {
		var err error
		if target, err = n.pickTarget(time.Now()); err != nil {
			return fmt.Errorf("transfer leadership from %s: %w", n.localID, err)
		}
	}
	addr, ok := n.voters()[target]
	if !ok || target == n.localID {
		return fmt.Errorf("transfer leadership to %q: not another voter", target)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- n.r.LeadershipTransferToServer(raft.ServerID(target), raft.ServerAddress(addr)).Error()
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, raft.ErrNotLeader) {
			n.trans.restartStreak(raft.ServerID(target))
			return fmt.Errorf("transfer leadership from %s to %s: %w", n.localID, target, err)
		}
		e.log.Info().Str("local_id", n.localID).Str("target", target).Dur("took_ms", time.Since(start)).Msg("leadership transferred")
		return nil
	case <-ctx.Done():
		n.trans.restartStreak(raft.ServerID(target))
		return fmt.Errorf("transfer leadership from %s to %s: %w", n.localID, target, ctx.Err())
	}
}

// Status reports the Raft state word, details for humans, and in Elector
// the typed fields the supervisor acts on.
func (e *Elector) Status(context.Context) (*pb.PluginStatus, error) {
	n := e.node.Load()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if n == nil {
		state := "unconfigured"
		if closed {
			state = "shutdown"
		}
		return &pb.PluginStatus{State: state, Details: map[string]string{}}, nil
	}
	l := n.leadership()
	d := map[string]string{
		"cluster":        n.cfg.GetCluster(),
		"local_id":       n.localID,
		"address":        n.localAddr,
		"data_dir":       n.cfg.GetDataDir(),
		"members":        strconv.Itoa(len(n.members().ids)),
		"term":           strconv.FormatUint(l.term, 10),
		"leader_id":      l.leaderID,
		"leader_address": l.leaderAddress,
	}
	state := "shutdown"
	es := &pb.ElectorStatus{}
	if !closed {
		// Stats goes through the Raft loop, which is gone after Close.
		s := n.r.Stats()
		for _, k := range []string{"last_contact", "commit_index", "applied_index", "last_log_index", "last_log_term", "num_peers"} {
			if v, ok := s[k]; ok {
				d[k] = v
			}
		}
		state = strings.ToLower(s["state"])
		now := time.Now()
		d["tls"] = strconv.FormatBool(n.trans.tls)
		d["priority"] = strconv.Itoa(int(n.members().prios[n.localID]))
		n.membershipStatus(d, es)
		es.LastContact = d["last_contact"]
		// A member being added hears the leader's heartbeats before its
		// log, and so its configuration, arrives: it follows already.
		if !n.hasConfiguration() && l.leaderID == "" {
			state = StateJoining
			es.Joining = true
		}
		d["preempt"] = strconv.FormatBool(n.cfg.GetPreempt())
		d["transport_timeout"] = n.t.transport().String()
		d["votes_refused_at_start"] = strconv.Itoa(n.trans.refusedVotes())
		n.leadMu.Lock()
		if !n.leaderSince.IsZero() {
			d["leader_since"] = n.leaderSince.Format(time.RFC3339Nano)
			es.LeaderSinceUnixNano = n.leaderSince.UnixNano()
			if !n.contactBefore.IsZero() {
				d["contact_before_leading"] = n.contactBefore.Format(time.RFC3339Nano)
				es.ContactBeforeLeadingUnixNano = n.contactBefore.UnixNano()
			}
		}
		n.leadMu.Unlock()
		if n.r.State() == raft.Leader {
			for _, srv := range n.r.GetConfiguration().Configuration().Servers {
				id := string(srv.ID)
				if id == n.localID {
					continue
				}
				ps := n.trans.peer(raft.ServerID(id))
				v := "never answered"
				if !ps.lastOK.IsZero() {
					v = fmt.Sprintf("last answer %s ago, log %d, failures %d", now.Sub(ps.lastOK).Round(time.Millisecond), ps.lastLog, ps.fails)
					if !ps.okSince.IsZero() {
						v += fmt.Sprintf(", in contact for %s", now.Sub(ps.okSince).Round(time.Millisecond))
					}
				}
				d["peer."+id] = v
				if es.Peers == nil {
					es.Peers = map[string]string{}
				}
				es.Peers[id] = v
			}
			if t := n.handoverTarget(now); t != "" {
				d["handover_to"] = t
				es.HandoverTo = t
			}
		}
	}
	return &pb.PluginStatus{State: state, Details: d, Elector: es}, nil
}

// StateJoining is Status's state word for a member that has no Raft
// configuration and follows no leader yet: it waits to be added, or to
// bootstrap a new cluster.
const StateJoining = "joining"

// Gather returns the elector's own metrics.
func (e *Elector) Gather() ([]*dto.MetricFamily, error) { return e.met.reg.Gather() }

// Close stops Raft and releases the port and the data dir; it is idempotent.
// Watchers get a last SHUTDOWN leadership and return.
func (e *Elector) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return e.closeErr
	}
	e.closed = true
	n := e.node.Load()
	if n == nil {
		e.publishFinal(leadership{role: pb.Role_ROLE_SHUTDOWN})
		return nil
	}
	var errs []error
	if err := n.r.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("shut down raft %s: %w", n.localID, err))
	}
	n.r.DeregisterObserver(n.obs)
	close(n.stop)
	<-n.monitorDone
	<-n.detectDone
	<-n.reconcileDone
	<-n.joinDone
	if err := n.trans.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft transport on %s: %w", n.localAddr, err))
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft store in %s: %w", n.cfg.GetDataDir(), err))
	}
	e.publishFinal(n.leadership())
	e.closeErr = errors.Join(errs...)
	e.log.Info().Str("local_id", n.localID).Msg("raft stopped")
	return e.closeErr
}

// nopFSM replicates nothing: leadership is the product.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

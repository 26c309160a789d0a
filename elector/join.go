package elector

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Joining. A member whose data dir is empty starts Raft without a
// configuration: such a node never stands for election, it only answers a
// leader that adds it. Then it asks the other members of its file what they
// are (the hello below) until one of two things happens:
//
//   - Some member answers with a Raft configuration (or is itself waiting
//     because it saw one): a cluster exists. This member waits for that
//     cluster's leader to add it (reconcile.go) and never bootstraps,
//     because a configuration of its own at index 1 would look to Raft like
//     the cluster's own first entry and break its log matching.
//   - A quorum of the file's members, this one included, answer that they
//     are new too, with the same member list and cluster name, and nobody
//     answers otherwise: this is a first install. It bootstraps the file's
//     members; the others do the same with the identical configuration,
//     which Raft allows, or are added by whichever bootstrapped first.
//
// So the first start of a new cluster needs no extra step, and a new member
// started beside a running cluster cannot form a rival one. A majority of
// new members listed at once (against the one-at-a-time procedure) while the
// old ones are unreachable would bootstrap: the README says why not to.

// helloMagic starts a hello on the Raft port. Raft's own connections start
// with an RPC type byte, 0 to 4.
const helloMagic = 'K'

// helloTimeout bounds one hello, both ways.
const helloTimeout = 2 * time.Second

// Hello states.
const (
	helloFresh   = "fresh"   // no Raft state, no cluster seen
	helloWaiting = "waiting" // no Raft state, a cluster was seen: waits to be added
	helloMember  = "member"  // has a Raft configuration
)

type helloRequest struct {
	Cluster string `json:"cluster"`
	From    string `json:"from"`
}

type helloReply struct {
	Cluster string   `json:"cluster"`
	ID      string   `json:"id"`
	State   string   `json:"state"`
	Term    uint64   `json:"term"`
	Members string   `json:"members"`          // fingerprint of its member list
	Voters  []string `json:"voters,omitempty"` // its Raft configuration's voters
}

// muxStream is a raft StreamLayer whose accepted connections may carry a
// hello instead of Raft RPCs; the first byte tells.
type muxStream struct {
	raft.StreamLayer
	hello atomic.Pointer[func(helloRequest) helloReply]
}

func (s *muxStream) Accept() (net.Conn, error) {
	c, err := s.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &helloConn{Conn: c, s: s}, nil
}

// helloConn answers a hello on its first read, in raft's per-connection
// goroutine, and then ends the connection as raft sees it.
type helloConn struct {
	net.Conn
	s      *muxStream
	peeked bool
}

func (c *helloConn) Read(p []byte) (int, error) {
	if c.peeked || len(p) == 0 {
		return c.Conn.Read(p)
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	c.peeked = true
	if p[0] != helloMagic {
		return n, err
	}
	c.serveHello(bytes.NewReader(append([]byte(nil), p[1:n]...)))
	_ = c.Conn.Close()
	return 0, io.EOF
}

func (c *helloConn) serveHello(buffered io.Reader) {
	_ = c.Conn.SetDeadline(time.Now().Add(helloTimeout))
	line, err := bufio.NewReaderSize(io.MultiReader(buffered, c.Conn), 4096).ReadSlice('\n')
	if err != nil {
		return
	}
	var req helloRequest
	if json.Unmarshal(line, &req) != nil {
		return
	}
	fn := c.s.hello.Load()
	if fn == nil {
		return
	}
	b, err := json.Marshal((*fn)(req))
	if err != nil {
		return
	}
	_, _ = c.Conn.Write(append(b, '\n'))
}

// sayHello asks the member at addr what it is.
func sayHello(stream raft.StreamLayer, addr string, req helloRequest) (helloReply, error) {
	var r helloReply
	c, err := stream.Dial(raft.ServerAddress(addr), helloTimeout)
	if err != nil {
		return r, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(helloTimeout))
	b, err := json.Marshal(req)
	if err != nil {
		return r, err
	}
	if _, err := c.Write(append(append([]byte{helloMagic}, b...), '\n')); err != nil {
		return r, err
	}
	line, err := bufio.NewReaderSize(c, 4096).ReadSlice('\n')
	if err != nil {
		return r, fmt.Errorf("read hello reply: %w", err)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("hello reply: %w", err)
	}
	return r, nil
}

// hasConfiguration tells whether n's Raft knows a configuration: it was
// bootstrapped, restarted with state, or added by a leader.
func (n *node) hasConfiguration() bool {
	cf := n.r.GetConfiguration()
	return cf.Error() == nil && len(cf.Configuration().Servers) > 0
}

// answerHello is what n tells a member that asks.
func (n *node) answerHello(helloRequest) helloReply {
	r := helloReply{Cluster: n.cfg.GetCluster(), ID: n.localID, Members: n.members().fingerprint, State: helloFresh, Term: n.r.CurrentTerm()}
	cf := n.r.GetConfiguration()
	switch {
	case cf.Error() == nil && len(cf.Configuration().Servers) > 0:
		r.State = helloMember
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				r.Voters = append(r.Voters, string(s.ID))
			}
		}
	case n.sawCluster.Load():
		r.State = helloWaiting
	}
	return r
}

// joinRepeatLog is how often a member that still waits says so again.
const joinRepeatLog = time.Minute

// join runs while n has no configuration: it bootstraps a new cluster or
// waits to be added to the existing one (see the top of this file).
func (e *Elector) join(n *node) {
	defer close(n.joinDone)
	tick := time.NewTicker(membershipInterval(n.t.heartbeat))
	defer tick.Stop()
	log := e.log.With().Str("local_id", n.localID).Logger()
	// Each verdict is said when it starts to hold, then once a minute.
	var said string
	var saidAt time.Time
	say := func(msg, detail string) {
		if msg != said || time.Since(saidAt) >= joinRepeatLog {
			log.Warn().Str("detail", detail).Msg(msg)
			said, saidAt = msg, time.Now()
		}
	}
	for {
		if n.hasConfiguration() {
			if said != "" {
				log.Info().Msg("membership: this member is in the cluster's configuration now")
			}
			return
		}
		verdict, detail := n.probeCluster()
		switch verdict {
		case joinBootstrap:
			err := n.r.BootstrapCluster(n.members().configuration()).Error()
			switch {
			case err == nil:
				log.Info().Str("detail", detail).Msg("membership: no cluster among members; bootstrapped a new one")
			case errors.Is(err, raft.ErrCantBootstrap):
				// Added by a leader meanwhile.
			default:
				log.Warn().Err(err).Msg("membership: bootstrap failed; retrying")
			}
		case joinWait:
			say("membership: a cluster exists; waiting for its leader to add this member (the leader does so once members lists it)", detail)
		case joinUnsure:
			say("membership: not enough new members answer to start a cluster, and no existing cluster answers; asking again", detail)
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// Verdicts of probeCluster.
const (
	joinUnsure = iota
	joinWait
	joinBootstrap
)

// probeCluster says hello to every other member at once and decides.
func (n *node) probeCluster() (verdict int, detail string) {
	ms := n.members()
	req := helloRequest{Cluster: n.cfg.GetCluster(), From: n.localID}
	type answer struct {
		id  string
		r   helloReply
		err error
	}
	var wg sync.WaitGroup
	answers := make(chan answer, len(ms.ids))
	for _, id := range ms.ids {
		if id == n.localID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := sayHello(n.trans.stream, ms.addrs[id], req)
			answers <- answer{id, r, err}
		}()
	}
	wg.Wait()
	close(answers)
	fresh := 1 // this member
	var notes []string
	for a := range answers {
		switch {
		case a.err != nil:
			notes = append(notes, a.id+": no answer")
		case a.r.Cluster != req.Cluster:
			notes = append(notes, fmt.Sprintf("%s: cluster %q, not %q", a.id, a.r.Cluster, req.Cluster))
		case a.r.State == helloMember || a.r.State == helloWaiting:
			n.sawCluster.Store(true)
			d := fmt.Sprintf("%s answers %s in term %d", a.id, a.r.State, a.r.Term)
			if a.r.State == helloMember {
				d += " with voters " + fmt.Sprint(a.r.Voters)
			}
			notes = append(notes, d)
		case a.r.Members != ms.fingerprint:
			notes = append(notes, a.id+": is new, but with another members list")
		default:
			fresh++
		}
	}
	sort.Strings(notes)
	detail = fmt.Sprintf("%d of %d members new with this members list; %s", fresh, len(ms.ids), strings.Join(notes, "; "))
	switch {
	case n.sawCluster.Load():
		return joinWait, detail
	case fresh >= quorum(len(ms.ids)):
		return joinBootstrap, detail
	}
	return joinUnsure, detail
}

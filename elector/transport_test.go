package elector

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// answeringPeer is a bare transport whose AppendEntries answers carry the
// request's term plus termDelta and lastLog.
func answeringPeer(t *testing.T, termDelta uint64, lastLog uint64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: &tcpStream{Listener: ln, adv: ln.Addr()}, MaxPool: 1, Timeout: time.Second, Logger: hclog.NewNullLogger(),
	})
	t.Cleanup(func() { nt.Close() })
	go func() {
		for rpc := range nt.Consumer() {
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term + termDelta, LastLog: lastLog, Success: termDelta == 0}, nil)
				continue
			}
			rpc.Respond(nil, errors.New("unexpected"))
		}
	}()
	return ln.Addr().String()
}

func testTransport(t *testing.T, hb time.Duration) *trackedTransport {
	t.Helper()
	tr, err := newTransport(freeAddrs(t, 1)[0], nil, hb, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// A heartbeat answered from a newer term is an error for raft's heartbeat
// loop (so it does not count as contact); replication answered from a
// newer term is not (raft's replication loop steps down on it).
func TestStaleTermHeartbeatIsNotContact(t *testing.T) {
	tr := testTransport(t, 200*time.Millisecond)
	newer := answeringPeer(t, 1, 0)
	hb := &raft.AppendEntriesRequest{Term: 3}
	var resp raft.AppendEntriesResponse
	if err := tr.AppendEntries("p", raft.ServerAddress(newer), hb, &resp); !errors.Is(err, errStaleTermHeartbeat) {
		t.Fatalf("heartbeat answered from term %d: err %v, want %v", resp.Term, err, errStaleTermHeartbeat)
	}
	repl := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 5, PrevLogTerm: 2, LeaderCommitIndex: 5}
	if err := tr.AppendEntries("p", raft.ServerAddress(newer), repl, &resp); err != nil || resp.Term != 4 {
		t.Fatalf("replication answered from a newer term: err %v term %d, want nil and 4", err, resp.Term)
	}
	if ps := tr.peer("p"); !ps.lastOK.IsZero() || ps.fails != 2 {
		t.Fatalf("peer state after two stale answers: %+v", ps)
	}

	same := answeringPeer(t, 0, 9)
	if err := tr.AppendEntries("q", raft.ServerAddress(same), hb, &resp); err != nil {
		t.Fatal(err)
	}
	ps := tr.peer("q")
	if ps.lastOK.IsZero() || ps.okSince.IsZero() || ps.lastLog != 9 || ps.fails != 0 {
		t.Fatalf("peer state after a good answer: %+v", ps)
	}
}

func TestIsHeartbeat(t *testing.T) {
	for _, tc := range []struct {
		req  raft.AppendEntriesRequest
		want bool
	}{
		{raft.AppendEntriesRequest{Term: 2}, true},
		{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 1, PrevLogTerm: 1}, false},
		{raft.AppendEntriesRequest{Term: 2, LeaderCommitIndex: 1}, false},
		{raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{{Index: 1}}}, false},
	} {
		if got := isHeartbeat(&tc.req); got != tc.want {
			t.Errorf("isHeartbeat(%+v) = %v", tc.req, got)
		}
	}
}

// For one heartbeat timeout after start, pre-votes and votes are refused
// before raft sees them; votes of a leadership transfer and everything
// else pass; afterwards votes pass too.
func TestStartQuarantine(t *testing.T) {
	const hb = 300 * time.Millisecond
	tr := testTransport(t, hb)
	target := string(tr.LocalAddr())
	got := make(chan string, 10)
	go func() {
		for rpc := range tr.Consumer() {
			switch req := rpc.Command.(type) {
			case *raft.RequestVoteRequest:
				got <- "vote transfer=" + map[bool]string{true: "yes", false: "no"}[req.LeadershipTransfer]
				rpc.Respond(&raft.RequestVoteResponse{Term: req.Term}, nil)
			case *raft.RequestPreVoteRequest:
				got <- "prevote"
				rpc.Respond(&raft.RequestPreVoteResponse{Term: req.Term}, nil)
			default:
				rpc.Respond(nil, errors.New("unexpected"))
			}
		}
	}()
	p := newFakePeer(t, "b", "127.0.0.1:1", nil)
	if _, err := p.requestVote("a", target, 5); err == nil || !strings.Contains(err.Error(), "not voting") {
		t.Fatalf("vote in quarantine: %v", err)
	}
	if _, err := p.requestPreVote("a", target, 5); err == nil || !strings.Contains(err.Error(), "not voting") {
		t.Fatalf("pre-vote in quarantine: %v", err)
	}
	var resp raft.RequestVoteResponse
	req := &raft.RequestVoteRequest{RPCHeader: p.header(), Term: 5, LeadershipTransfer: true}
	if err := p.trans.RequestVote("a", raft.ServerAddress(target), req, &resp); err != nil {
		t.Fatalf("transfer vote in quarantine: %v", err)
	}
	if g := <-got; g != "vote transfer=yes" {
		t.Fatalf("raft got %q", g)
	}
	if n := tr.refusedVotes(); n != 2 {
		t.Errorf("refused votes %d, want 2", n)
	}
	time.Sleep(hb - time.Since(tr.started) + 20*time.Millisecond)
	if _, err := p.requestVote("a", target, 6); err != nil {
		t.Fatalf("vote after the quarantine: %v", err)
	}
	if g := <-got; g != "vote transfer=no" {
		t.Fatalf("raft got %q", g)
	}
}

// Pipelining is off: raft's pipeline decoder would count failed RPCs as
// contact.
func TestNoPipeline(t *testing.T) {
	tr := testTransport(t, 200*time.Millisecond)
	if p, err := tr.AppendEntriesPipeline("p", "127.0.0.1:1"); p != nil || !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v %v", p, err)
	}
}

// Only the leader this member follows can order it to stand for election
// (TimeoutNow): one from another member, such as a dead leader's transfer
// retransmitted when a cut link comes back, is refused.
func TestTransferOnlyFromLeader(t *testing.T) {
	tr := testTransport(t, time.Millisecond)
	target := string(tr.LocalAddr())
	got := make(chan struct{}, 4)
	go func() {
		for rpc := range tr.Consumer() {
			if _, ok := rpc.Command.(*raft.TimeoutNowRequest); ok {
				got <- struct{}{}
				rpc.Respond(&raft.TimeoutNowResponse{}, nil)
				continue
			}
			rpc.Respond(nil, errors.New("unexpected"))
		}
	}()
	var leader atomic.Value
	leader.Store(raft.ServerID("b"))
	tr.followLeader(func() (raft.ServerAddress, raft.ServerID) { return "127.0.0.1:2", leader.Load().(raft.ServerID) })
	for _, tc := range []struct {
		from string
		ok   bool
	}{{"c", false}, {"b", true}} {
		p := newFakePeer(t, tc.from, "127.0.0.1:1", nil)
		err := p.timeoutNow("a", target)
		switch {
		case tc.ok && err != nil:
			t.Errorf("from the leader %s: %v", tc.from, err)
		case tc.ok:
			<-got
		case err == nil || !strings.Contains(err.Error(), "not from the leader"):
			t.Errorf("from %s, not the leader: %v", tc.from, err)
		}
	}
	leader.Store(raft.ServerID(""))
	if err := newFakePeer(t, "b", "127.0.0.1:1", nil).timeoutNow("a", target); err == nil {
		t.Error("transfer accepted by a member that follows no leader")
	}
	if len(got) != 0 {
		t.Errorf("raft got %d refused transfers", len(got))
	}
}

// Only AppendEntries of the newest term count as contact with a leader: a
// vote this member grants, or a deposed leader's AppendEntries, must not
// shorten the failover the supervisor measures.
func TestLeaderContactIgnoresVotesAndOldTerms(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmds    []any
		counted []bool // whether each command moved the contact time
	}{
		{"append entries", []any{&raft.AppendEntriesRequest{Term: 3}}, []bool{true}},
		{"vote", []any{&raft.AppendEntriesRequest{Term: 3}, &raft.RequestVoteRequest{Term: 4}, &raft.RequestPreVoteRequest{Term: 4}}, []bool{true, false, false}},
		{"deposed leader", []any{&raft.AppendEntriesRequest{Term: 5}, &raft.AppendEntriesRequest{Term: 4}, &raft.AppendEntriesRequest{Term: 5}}, []bool{true, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trackedTransport{}
			for i, cmd := range tc.cmds {
				before := tr.lastLeaderContact()
				time.Sleep(time.Millisecond)
				tr.noteLeaderContact(raft.RPC{Command: cmd})
				if moved := tr.lastLeaderContact().After(before); moved != tc.counted[i] {
					t.Fatalf("command %d (%T): contact moved %v, want %v", i, cmd, moved, tc.counted[i])
				}
			}
		})
	}
}

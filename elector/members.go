package elector

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// memberSet is the member list of this member's config file: the truth the
// leader brings Raft's configuration in line with (reconcile.go). A node
// holds one at a time and swaps it whole when the file is reloaded, so
// readers never see half of an update.
type memberSet struct {
	ids   []string          // in file order
	addrs map[string]string // id → address
	prios map[string]int32  // id → priority
	// fingerprint identifies the list (ids and addresses, not priorities):
	// fresh members bootstrap together only when theirs agree.
	fingerprint string
}

func newMemberSet(ms []*pb.Member) *memberSet {
	s := &memberSet{addrs: map[string]string{}, prios: map[string]int32{}}
	pairs := make([]string, 0, len(ms))
	for _, m := range ms {
		s.ids = append(s.ids, m.GetId())
		s.addrs[m.GetId()] = m.GetAddress()
		s.prios[m.GetId()] = m.GetPriority()
		pairs = append(pairs, m.GetId()+"="+m.GetAddress())
	}
	sort.Strings(pairs)
	sum := sha256.Sum256([]byte(strings.Join(pairs, "\n")))
	s.fingerprint = hex.EncodeToString(sum[:8])
	return s
}

// quorum is the number of votes a leader needs among n voters.
func quorum(n int) int { return n/2 + 1 }

// configuration is the Raft configuration the member list describes, every
// member a voter: what a brand-new cluster bootstraps with.
func (s *memberSet) configuration() raft.Configuration {
	var c raft.Configuration
	for _, id := range s.ids {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(s.addrs[id])})
	}
	return c
}

// Kinds of difference between the file and Raft's configuration.
const (
	diffNotInRaft = "in members, not in the Raft configuration"
	diffNotInFile = "in the Raft configuration, not in members"
	diffAddress   = "address differs"
	diffNonvoter  = "not yet a voter"
)

// difference is one way Raft's configuration differs from the file.
type difference struct {
	id, kind   string
	file, raft string // addresses, where they matter
}

func (d difference) String() string {
	switch d.kind {
	case diffAddress:
		return fmt.Sprintf("%s: address %s in members, %s in the Raft configuration", d.id, d.file, d.raft)
	case diffNotInRaft, diffNonvoter:
		return fmt.Sprintf("%s (%s): %s", d.id, d.file, d.kind)
	}
	return fmt.Sprintf("%s (%s): %s", d.id, d.raft, d.kind)
}

// differences lists how conf differs from the file, in file order and then
// Raft's, so the same state always reads the same.
func (s *memberSet) differences(conf raft.Configuration) []difference {
	inRaft := map[string]raft.Server{}
	for _, srv := range conf.Servers {
		inRaft[string(srv.ID)] = srv
	}
	var ds []difference
	for _, id := range s.ids {
		srv, ok := inRaft[id]
		switch {
		case !ok:
			ds = append(ds, difference{id: id, kind: diffNotInRaft, file: s.addrs[id]})
		case string(srv.Address) != s.addrs[id]:
			ds = append(ds, difference{id: id, kind: diffAddress, file: s.addrs[id], raft: string(srv.Address)})
		case srv.Suffrage != raft.Voter:
			ds = append(ds, difference{id: id, kind: diffNonvoter, file: s.addrs[id]})
		}
	}
	for _, srv := range conf.Servers {
		if _, ok := s.addrs[string(srv.ID)]; !ok {
			ds = append(ds, difference{id: string(srv.ID), kind: diffNotInFile, raft: string(srv.Address)})
		}
	}
	return ds
}

// describeServers renders a configuration's servers of one suffrage as
// "id (address), ...", or "none".
func describeServers(conf raft.Configuration, voters bool) string {
	var out []string
	for _, srv := range conf.Servers {
		if (srv.Suffrage == raft.Voter) == voters {
			out = append(out, fmt.Sprintf("%s (%s)", srv.ID, srv.Address))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func joinDifferences(ds []difference) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return strings.Join(out, "; ")
}

// members is the file's member list now.
func (n *node) members() *memberSet { return n.mem.Load() }

// voters maps the voters of Raft's latest configuration to their addresses.
func (n *node) voters() map[string]raft.ServerAddress {
	out := map[string]raft.ServerAddress{}
	for _, s := range n.r.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out[string(s.ID)] = s.Address
		}
	}
	return out
}

// Status details of membership, for humans; ElectorStatus carries the same
// facts typed.
const (
	statusVoters      = "raft_voters"
	statusNonvoters   = "raft_nonvoters"
	statusDifferences = "membership_differences"
)

// membershipStatus adds Raft's configuration and its differences from the
// file to a Status's details and typed fields.
func (n *node) membershipStatus(d map[string]string, es *pb.ElectorStatus) {
	conf := n.r.GetConfiguration().Configuration()
	d[statusVoters] = describeServers(conf, true)
	d[statusNonvoters] = describeServers(conf, false)
	for _, srv := range conf.Servers {
		es.Servers = append(es.Servers, &pb.ConsensusServer{Id: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	ds := n.members().differences(conf)
	for _, x := range ds {
		es.MembershipDifferences = append(es.MembershipDifferences, x.String())
	}
	if len(ds) > 0 {
		d[statusDifferences] = joinDifferences(ds)
	} else {
		d[statusDifferences] = "none"
	}
}

// updateMembers applies a Configure on a running elector: only the member
// list (ids, addresses, priorities) may change without a restart, and not
// this member's own address, which its listener is bound to.
func (e *Elector) updateMembers(n *node, cfg *pb.ElectorConfig) error {
	addrs, t, err := validate(cfg)
	if err != nil {
		return fmt.Errorf("elector config: %w", err)
	}
	if addrs[n.localID] != n.localAddr || cfg.GetLocalId() != n.localID {
		return fmt.Errorf("elector config: this member's own id or address changed (%s at %s): restart the member to apply it", cfg.GetLocalId(), addrs[cfg.GetLocalId()])
	}
	was, now := proto.Clone(n.cfg).(*pb.ElectorConfig), proto.Clone(cfg).(*pb.ElectorConfig)
	was.Members, now.Members, was.Tls, now.Tls = nil, nil, nil, nil
	if !proto.Equal(was, now) || t != n.t {
		return fmt.Errorf("%w: only members change without a restart", ErrAlreadyConfigured)
	}
	ms := newMemberSet(cfg.GetMembers())
	old := n.mem.Swap(ms)
	if old.fingerprint == ms.fingerprint && fmt.Sprint(old.prios) == fmt.Sprint(ms.prios) {
		return nil
	}
	e.log.Info().Str("local_id", n.localID).Int("members", len(ms.ids)).Str("fingerprint", ms.fingerprint).
		Msg("membership: members reloaded")
	select {
	case n.membersChanged <- struct{}{}:
	default:
	}
	return nil
}

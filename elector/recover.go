package elector

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/rs/zerolog"
	"go.etcd.io/bbolt"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// snapshotsRetained: the only snapshot ever written is recover's, which
// carries the recovered configuration.
const snapshotsRetained = 2

// openSnapshots is the data dir's file snapshot store (a snapshots/ folder
// beside raft.db). It must survive restarts: RecoverCluster puts the new
// configuration in a snapshot and deletes the log before it.
func openSnapshots(dir string, log zerolog.Logger) (raft.SnapshotStore, error) {
	s, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, rpc.HCLog(log, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("open raft snapshots in %s: %w", dir, err)
	}
	return s, nil
}

// offline is a data dir opened without starting Raft, for recover and for
// reading the stored configuration while the member is stopped.
type offline struct {
	store *raftboltdb.BoltStore
	snaps raft.SnapshotStore
	conf  *raft.Config
}

func openOffline(dataDir, localID string, readOnly bool) (*offline, error) {
	path := filepath.Join(dataDir, StoreFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("raft store %s: %w", path, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: storeOpenTimeout, ReadOnly: readOnly},
		NoSync:      readOnly,
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("open raft store %s: in use (is keep-vip-supervisor running? stop it first)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open raft store %s: %w", path, err)
	}
	silent := zerolog.Nop()
	snaps, err := openSnapshots(dataDir, silent)
	if err != nil {
		store.Close()
		return nil, err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(localID)
	rc.Logger = hclog.NewNullLogger()
	return &offline{store: store, snaps: snaps, conf: rc}, nil
}

// StoredConfiguration reads the Raft configuration kept in dataDir, for
// `validate --host` while the member is stopped: the newest snapshot's (only
// recover writes one), then every configuration entry of the log after it.
// Read-only: raft's own GetConfiguration would start a node, which writes.
func StoredConfiguration(dataDir, localID string) (raft.Configuration, error) {
	o, err := openOffline(dataDir, localID, true)
	if err != nil {
		return raft.Configuration{}, err
	}
	defer o.store.Close()
	var conf raft.Configuration
	from := uint64(0)
	snaps, err := o.snaps.List()
	if err != nil {
		return conf, fmt.Errorf("list raft snapshots in %s: %w", dataDir, err)
	}
	if len(snaps) > 0 {
		conf, from = snaps[0].Configuration, snaps[0].Index
	}
	first, err := o.store.FirstIndex()
	if err != nil {
		return conf, fmt.Errorf("read raft log in %s: %w", dataDir, err)
	}
	last, err := o.store.LastIndex()
	if err != nil {
		return conf, fmt.Errorf("read raft log in %s: %w", dataDir, err)
	}
	for i := max(first, from+1); i <= last && i > 0; i++ {
		var l raft.Log
		if err := o.store.GetLog(i, &l); err != nil {
			return conf, fmt.Errorf("read raft log entry %d in %s: %w", i, dataDir, err)
		}
		if l.Type == raft.LogConfiguration {
			conf = raft.DecodeConfiguration(l.Data)
		}
	}
	return conf, nil
}

// Recover rewrites the configuration stored in dataDir to members, every
// one a voter (hashicorp/raft's RecoverCluster), when a quorum is lost for
// good. Every surviving member must be recovered with the same list before
// any of them starts again; the README says when this is safe.
func Recover(dataDir, localID string, members []*pb.Member) (raft.Configuration, error) {
	ms := newMemberSet(members)
	if _, ok := ms.addrs[localID]; !ok {
		return raft.Configuration{}, fmt.Errorf("recover: this member (%s) is not among the members", localID)
	}
	o, err := openOffline(dataDir, localID, false)
	if err != nil {
		return raft.Configuration{}, err
	}
	defer o.store.Close()
	_, trans := raft.NewInmemTransport(raft.ServerAddress(ms.addrs[localID]))
	conf := ms.configuration()
	if err := raft.RecoverCluster(o.conf, nopFSM{}, o.store, o.store, o.snaps, trans, conf); err != nil {
		return raft.Configuration{}, fmt.Errorf("recover raft configuration in %s: %w", dataDir, err)
	}
	return conf, nil
}

// Offline answers the elector binary's offline requests (rpc.OfflineArg):
// recover, and the stored or a running member's configuration compared with
// the file's members.
func Offline(req *pb.ElectorOfflineRequest) (*pb.ElectorOfflineReply, error) {
	cfg := req.GetConfig()
	members := cfg.GetMembers()
	switch req.GetOp() {
	case pb.ElectorOfflineRequest_OP_STORED_DIFFERENCES:
		if _, err := os.Stat(filepath.Join(cfg.GetDataDir(), StoreFile)); errors.Is(err, os.ErrNotExist) {
			return &pb.ElectorOfflineReply{}, nil // nothing stored yet
		}
		conf, err := StoredConfiguration(cfg.GetDataDir(), cfg.GetLocalId())
		if err != nil {
			return nil, err
		}
		return &pb.ElectorOfflineReply{Differences: differences(conf, members)}, nil
	case pb.ElectorOfflineRequest_OP_DIFFERENCES:
		var conf raft.Configuration
		for _, srv := range req.GetServers() {
			suffrage := raft.Nonvoter
			if srv.GetVoter() {
				suffrage = raft.Voter
			}
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: suffrage, ID: raft.ServerID(srv.GetId()), Address: raft.ServerAddress(srv.GetAddress())})
		}
		return &pb.ElectorOfflineReply{Differences: differences(conf, members)}, nil
	case pb.ElectorOfflineRequest_OP_RECOVER:
		conf, err := Recover(cfg.GetDataDir(), cfg.GetLocalId(), members)
		if err != nil {
			return nil, err
		}
		reply := &pb.ElectorOfflineReply{}
		for _, srv := range conf.Servers {
			reply.Servers = append(reply.Servers, &pb.ConsensusServer{Id: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
		}
		return reply, nil
	}
	return nil, fmt.Errorf("offline request: unknown op %v", req.GetOp())
}

// differences says how conf differs from members, one sentence each; none
// when they match or conf is empty (nothing stored yet).
func differences(conf raft.Configuration, members []*pb.Member) []string {
	if len(conf.Servers) == 0 {
		return nil
	}
	var out []string
	for _, d := range newMemberSet(members).differences(conf) {
		out = append(out, d.String())
	}
	return out
}

package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/limits"
	"github.com/keep-vip/keep-vip/rpc/raftls"
)

// Raft holds the election timings, the transport's TLS and preemption.
//
// Only heartbeatTimeout has a fixed default; the election timeout defaults
// to it and the lease to 2/5 of it, so setting heartbeatTimeout alone scales
// the others (see elector/timing.go for why these ratios).
type Raft struct {
	HeartbeatTimeout   time.Duration `koanf:"heartbeattimeout"`
	ElectionTimeout    time.Duration `koanf:"electiontimeout"`
	LeaderLeaseTimeout time.Duration `koanf:"leaderleasetimeout"`
	TLS                RaftTLS       `koanf:"tls"`
	// Preempt moves leadership to the healthy member of highest priority
	// once it has been healthy and caught up for PreemptDelay.
	Preempt      bool          `koanf:"preempt"`
	PreemptDelay time.Duration `koanf:"preemptdelay"`
}

// RaftTLS names the PEM files for mutual TLS between members. All three or
// none: none means plain TCP.
type RaftTLS struct {
	CA   string `koanf:"ca"`
	Cert string `koanf:"cert"`
	Key  string `koanf:"key"`
}

// Enabled tells whether any TLS file is configured.
func (t RaftTLS) Enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// raftKeys are the Raft timeouts' keys in the file.
var raftKeys = limits.RaftTimingKeys{Heartbeat: "raft.heartbeatTimeout", Election: "raft.electionTimeout", Lease: "raft.leaderLeaseTimeout"}

// Bounds of the raft settings.
var (
	maxPreemptDelay = 24 * time.Hour
	maxPriority     = 1000
)

// fillRaft sets the raft defaults that depend on the heartbeat timeout.
func (c *Config) fillRaft() {
	r := &c.Raft
	if r.ElectionTimeout == 0 {
		r.ElectionTimeout = limits.DefaultElectionTimeout(r.HeartbeatTimeout)
	}
	if r.LeaderLeaseTimeout == 0 {
		r.LeaderLeaseTimeout = limits.DefaultLeaderLeaseTimeout(r.HeartbeatTimeout)
	}
	if r.PreemptDelay == 0 {
		r.PreemptDelay = limits.DefaultPreemptDelay
	}
}

func (c *Config) validateRaft(bad func(string, ...any)) {
	r := c.Raft
	if err := limits.CheckRaftTimings(r.HeartbeatTimeout, r.ElectionTimeout, r.LeaderLeaseTimeout, raftKeys); err != nil {
		bad("%v", err)
	}
	if r.PreemptDelay < 0 || r.PreemptDelay > maxPreemptDelay {
		bad("raft.preemptDelay: %s must be between 0 and %s", r.PreemptDelay, maxPreemptDelay)
	}
	if t := r.TLS; t.Enabled() {
		for _, f := range []struct{ key, path string }{{"raft.tls.ca", t.CA}, {"raft.tls.cert", t.Cert}, {"raft.tls.key", t.Key}} {
			switch {
			case f.path == "":
				bad("%s: missing; raft.tls needs ca, cert and key", f.key)
			case !filepath.IsAbs(f.path):
				bad("%s: %q must be an absolute path", f.key, f.path)
			}
		}
	}
	for i, m := range c.Members {
		if m.Priority < 0 || m.Priority > maxPriority {
			bad("members[%d].priority: %d must be between 0 and %d", i, m.Priority, maxPriority)
		}
	}
}

// ReadRaftTLS reads the TLS files into PEM for the elector; nil without
// TLS. The elector checks the contents (key matches certificate,
// certificate signed by the CA) when it starts.
func (c *Config) ReadRaftTLS() (*pb.RaftTLS, error) {
	t := c.Raft.TLS
	if !t.Enabled() {
		return nil, nil
	}
	var errs []error
	read := func(key, path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return b
	}
	out := &pb.RaftTLS{
		CaPem:   read("raft.tls.ca", t.CA),
		CertPem: read("raft.tls.cert", t.Cert),
		KeyPem:  read("raft.tls.key", t.Key),
	}
	return out, errors.Join(errs...)
}

// ElectorConfig is the elector plugin's part of the config, without the TLS
// files (ReadRaftTLS), which are read at every elector start.
func (c *Config) ElectorConfig(local Member) *pb.ElectorConfig {
	out := &pb.ElectorConfig{
		Cluster:              c.Cluster,
		LocalId:              local.ID,
		DataDir:              c.DataDir,
		HeartbeatTimeoutMs:   c.Raft.HeartbeatTimeout.Milliseconds(),
		ElectionTimeoutMs:    c.Raft.ElectionTimeout.Milliseconds(),
		LeaderLeaseTimeoutMs: c.Raft.LeaderLeaseTimeout.Milliseconds(),
		Preempt:              c.Raft.Preempt,
		PreemptDelayMs:       c.Raft.PreemptDelay.Milliseconds(),
	}
	for _, m := range c.Members {
		out.Members = append(out.Members, &pb.Member{Id: m.ID, Address: m.Address, Priority: int32(m.Priority)})
	}
	return out
}

// checkRaftTLS reads the TLS files and checks them as the elector will, for
// `validate --host` and start.
func (c *Config) checkRaftTLS() error {
	t, err := c.ReadRaftTLS()
	if err != nil {
		return err
	}
	if err := raftls.Check(t); err != nil {
		return fmt.Errorf("raft.tls: %w", err)
	}
	return nil
}

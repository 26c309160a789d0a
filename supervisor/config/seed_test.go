package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The original example config (../shared/seed beside the repo) must load
// unchanged, on any host.
func TestOriginalExampleLoads(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "seed", "config.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("original example config not beside the repo: %v", err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("original example config: %v", err)
	}
	if c.ChecksInterval != 2*time.Second || c.Checks[0].Timeout != time.Second {
		t.Fatalf("ChecksInterval=%s timeout=%s, want 2s and 1s", c.ChecksInterval, c.Checks[0].Timeout)
	}
	if len(c.Members) != 3 || c.LoadBalancers[0].Backends[2].Address != "172.16.0.13:80" || !c.Prometheus.Enabled {
		t.Fatalf("loaded %+v", c)
	}
}

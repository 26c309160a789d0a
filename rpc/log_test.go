package rpc

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
)

// TestHCLogVocabulary: raft's fields reach the log in keep-vip's words.
func TestHCLogVocabulary(t *testing.T) {
	var buf bytes.Buffer
	HCLog(zerolog.New(&buf), "raft").Info("entering follower state",
		"follower", struct{}{}, "leader-address", "198.18.0.12:20000", "leader-id", "server2")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if m["leader"] != "server2" || m["leader_address"] != "198.18.0.12:20000" {
		t.Errorf("fields %v, want leader=server2 leader_address=198.18.0.12:20000", m)
	}
	for _, k := range []string{"leader-id", "leader-address", "leader_id"} {
		if _, ok := m[k]; ok {
			t.Errorf("field %s left: %v", k, m)
		}
	}

	buf.Reset()
	HCLog(zerolog.New(&buf), "raft").Info("entering leader state", "leader", struct{}{})
	m = nil
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["leader"]; ok {
		t.Errorf("a leader that is not an id is kept: %v", m)
	}
}

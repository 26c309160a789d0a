package supervisor

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const journaldChildEnv = "KEEPVIP_TEST_JOURNALD_CHILD"

// TestJournaldFields checks what reaches journald's socket: the supervisor's
// and its plugins' lines with native fields, so that
// `journalctl -u keep-vip-supervisor PLUGIN=elector` finds the elector's
// lines. journald's socket path is fixed, so the test runs itself again in
// a private mount namespace where a tmpfs hides /run and a listener of
// ours stands in for /run/systemd/journal/socket; the host's /run is never
// touched.
func TestJournaldFields(t *testing.T) {
	if os.Getenv(journaldChildEnv) == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root: a private mount namespace puts a listener at journald's socket path")
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("unshare (util-linux) not found")
		}
		cmd := exec.Command(unshare, "--mount", "--propagation", "private",
			os.Args[0], "-test.run=^TestJournaldFields$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), journaldChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a private mount namespace:\n%s", out)
		if err != nil || !strings.Contains(string(out), "--- PASS: TestJournaldFields") {
			t.Fatalf("child test failed: %v", err)
		}
		return
	}

	if err := syscall.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount a private tmpfs on /run: %v", err)
	}
	if err := os.MkdirAll("/run/systemd/journal", 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "/run/systemd/journal/socket", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// As Supervisor.Run logs: the member on every line, the plugin on the
	// runners' lines and on the plugins' own lines re-logged from stderr.
	log := NewLogger("journal", zerolog.DebugLevel, os.Stdout).With().
		Str("cluster", "c1").Str("member", "server1").Logger()
	log.Info().Str("role", "leader").Uint64("term", 7).Str("leader", "server1").Msg("leadership")
	log.Info().Str("vip", "198.18.0.100").Msg("VIP acquired")
	pw := newPluginLogWriter(log.With().Str("plugin", "elector").Logger())
	if _, err := pw.Write([]byte(`{"level":"warn","message":"heartbeat failed","peer":"server2","term":7,"time":"x"}` + "\n")); err != nil {
		t.Fatal(err)
	}

	want := []map[string]string{
		{"MESSAGE": "leadership", "PRIORITY": "6", "MEMBER": "server1", "CLUSTER": "c1", "ROLE": "leader", "TERM": "7",
			"LEADER": "server1", "SYSLOG_IDENTIFIER": "keep-vip-supervisor"},
		{"MESSAGE": "VIP acquired", "PRIORITY": "6", "MEMBER": "server1", "VIP": "198.18.0.100"},
		{"MESSAGE": "heartbeat failed", "PRIORITY": "4", "MEMBER": "server1", "PLUGIN": "elector", "PEER": "server2",
			"TERM": "7", "SYSLOG_IDENTIFIER": "keep-vip-supervisor"},
	}
	buf := make([]byte, 1<<16)
	for i, w := range want {
		_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := ln.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		got, err := parseJournalNative(buf[:n])
		if err != nil {
			t.Fatalf("datagram %d: %v: %q", i, err, buf[:n])
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("datagram %d: %s=%q, want %q (all: %v)", i, k, got[k], v, got)
			}
		}
		for _, k := range []string{"LEVEL", "TIME", "plugin", "member"} {
			if _, ok := got[k]; ok {
				t.Errorf("datagram %d: unexpected field %s", i, k)
			}
		}
		t.Logf("datagram %d: %v", i, got)
	}
}

// parseJournalNative decodes journald's native protocol: KEY=value lines,
// or KEY, newline, a little-endian uint64 length, the value and a newline.
func parseJournalNative(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, errShort
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		b = b[nl+1:]
		if len(b) < 8 {
			return nil, errShort
		}
		n := binary.LittleEndian.Uint64(b[:8])
		b = b[8:]
		if uint64(len(b)) < n+1 {
			return nil, errShort
		}
		out[string(line)] = string(b[:n])
		b = b[n+1:]
	}
	return out, nil
}

var errShort = &net.AddrError{Err: "short journal datagram"}

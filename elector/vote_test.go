package elector

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// helperEnv makes the test binary run one elector from the config in it
// (protojson) instead of the tests, until it is killed.
const helperEnv = "ELECTOR_TEST_HELPER_CONFIG"

func TestMain(m *testing.M) {
	if raw := os.Getenv(helperEnv); raw != "" {
		os.Exit(runHelperElector(raw))
	}
	os.Exit(m.Run())
}

func runHelperElector(raw string) int {
	var cfg pb.ElectorConfig
	if err := protojson.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	e := New(zerolog.New(os.Stderr).Level(zerolog.WarnLevel))
	if err := e.Configure(context.Background(), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper configure:", err)
		return 1
	}
	fmt.Println("ready")
	// Bounded, in case the test that started it is gone.
	time.Sleep(2 * time.Minute)
	return 0
}

// electorProcess is an elector in a child process, for kill -9.
type electorProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startElectorProcess(t *testing.T, cfg *pb.ElectorConfig) *electorProcess {
	t.Helper()
	raw, err := protojson.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	if os.Getenv("ELECTOR_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &electorProcess{cmd: cmd, done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill9)
	select {
	case l := <-ready:
		if l != "ready" {
			t.Fatalf("elector process: %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("elector process not ready after 10s")
	}
	return p
}

// kill9 kills the process without giving it any chance to clean up.
func (p *electorProcess) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// A member that granted its vote in term T and is then killed (kill -9,
// the elector and the node alike: the vote is fsynced before the answer)
// and restarted from its data dir refuses another candidate's vote request
// for T, still grants the same candidate again, and votes in T+1. Just
// after its restart it votes for nobody (the start-up quarantine).
func TestVoteSurvivesKill9(t *testing.T) {
	cfg := clusterConfigs(t, 3)[0]
	me := cfg.GetMembers()[0]
	b, c := cfg.GetMembers()[1], cfg.GetMembers()[2]
	hb := time.Duration(cfg.GetHeartbeatTimeoutMs()) * time.Millisecond
	// b and c are played by bare transports; nothing listens at their
	// configured addresses, so the member's own pre-votes fail and it never
	// raises its term by itself.
	pb1 := newFakePeer(t, b.GetId(), b.GetAddress(), nil)
	pc := newFakePeer(t, c.GetId(), c.GetAddress(), nil)

	proc := startElectorProcess(t, cfg)
	const term = 7
	// Right after start: the quarantine.
	if r, err := pb1.requestVote(me.GetId(), me.GetAddress(), term); err == nil || !strings.Contains(err.Error(), "not voting") {
		t.Fatalf("vote request right after start: granted=%v err=%v, want the quarantine", r.Granted, err)
	}
	time.Sleep(hb + hb/2)
	r, err := pb1.requestVote(me.GetId(), me.GetAddress(), term)
	if err != nil || !r.Granted {
		t.Fatalf("first vote request for term %d from %s: granted=%v err=%v", term, b.GetId(), r.Granted, err)
	}
	t.Logf("%s voted for %s in term %d; kill -9", me.GetId(), b.GetId(), term)
	proc.kill9()

	startElectorProcess(t, cfg)
	// A fresh transport for b: its pooled connection died with the process.
	pb1 = newFakePeer(t, b.GetId(), b.GetAddress(), nil)
	if _, err := pc.requestVote(me.GetId(), me.GetAddress(), term); err == nil || !strings.Contains(err.Error(), "not voting") {
		t.Fatalf("vote request right after restart: err=%v, want the quarantine", err)
	}
	time.Sleep(hb + hb/2)
	r, err = pc.requestVote(me.GetId(), me.GetAddress(), term)
	if err != nil {
		t.Fatalf("second candidate, term %d: %v", term, err)
	}
	if r.Granted {
		t.Fatalf("%s voted twice in term %d: for %s, then after kill -9 and restart for %s", me.GetId(), term, b.GetId(), c.GetId())
	}
	if r.Term != term {
		t.Errorf("term after restart %d, want %d (it was fsynced with the vote)", r.Term, term)
	}
	if r, err := pb1.requestVote(me.GetId(), me.GetAddress(), term); err != nil || !r.Granted {
		t.Errorf("the candidate it voted for asks again in term %d: granted=%v err=%v, want granted", term, r.Granted, err)
	}
	if r, err := pc.requestVote(me.GetId(), me.GetAddress(), term+1); err != nil || !r.Granted {
		t.Errorf("second candidate in term %d: granted=%v err=%v, want granted", term+1, r.Granted, err)
	}
	// Pre-votes never count as votes: one for term+2 is granted and does
	// not stop a vote for another candidate in term+2.
	if r, err := pb1.requestPreVote(me.GetId(), me.GetAddress(), term+2); err != nil || !r.Granted {
		t.Errorf("pre-vote term %d: granted=%v err=%v", term+2, r.Granted, err)
	}
	if r, err := pc.requestVote(me.GetId(), me.GetAddress(), term+2); err != nil || !r.Granted {
		t.Errorf("vote term %d after a pre-vote for another: granted=%v err=%v", term+2, r.Granted, err)
	}
}

// The same across a graceful restart of the elector in the same process.
func TestVoteSurvivesElectorRestart(t *testing.T) {
	cfg := clusterConfigs(t, 3)[0]
	me, b, c := cfg.GetMembers()[0], cfg.GetMembers()[1], cfg.GetMembers()[2]
	hb := time.Duration(cfg.GetHeartbeatTimeoutMs()) * time.Millisecond
	pb1 := newFakePeer(t, b.GetId(), b.GetAddress(), nil)
	pc := newFakePeer(t, c.GetId(), c.GetAddress(), nil)
	e := startElector(t, cfg)
	time.Sleep(hb + hb/2)
	const term = 5
	if r, err := pb1.requestVote(me.GetId(), me.GetAddress(), term); err != nil || !r.Granted {
		t.Fatalf("first vote: granted=%v err=%v", r.Granted, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = startElector(t, cfg)
	pc = newFakePeer(t, c.GetId(), c.GetAddress(), nil)
	if got := statusTerm(t, e); got != term {
		t.Errorf("term after restart %d, want %d", got, term)
	}
	time.Sleep(hb + hb/2)
	if r, err := pc.requestVote(me.GetId(), me.GetAddress(), term); err != nil || r.Granted {
		t.Fatalf("second candidate in the same term after restart: granted=%v err=%v, want refused", r.Granted, err)
	}
}

package checker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// shellPath runs an exec check that asks for a shell.
const shellPath = "/bin/sh"

// outputGrace is how long an exec check still reads output after its
// command ended and its process group was killed; only a process that left
// the group (setsid) can hold the pipe open past that.
const outputGrace = 100 * time.Millisecond

// execProber passes when a command exits 0. The command runs directly with
// its arguments, without a shell unless the check asks for one, in a process
// group of its own: when the check's time is up the whole group is killed,
// so a hung script takes its children with it, and whatever the command left
// running in its group is killed when it ends.
type execProber struct {
	path    string
	args    []string // after path
	display string   // the command for error messages
}

func newExecProber(check *pb.Check) (prober, error) {
	if err := onlyFor(check, ProtocolExec); err != nil {
		return nil, err
	}
	if check.GetAddress() != "" {
		return nil, fmt.Errorf("address %q: an exec check has none; the command says what it checks", check.GetAddress())
	}
	e := check.GetExec()
	if strings.TrimSpace(e.GetCommand()) == "" {
		return nil, errors.New("command is missing")
	}
	if strings.ContainsRune(e.GetCommand(), 0) || slices.ContainsFunc(e.GetArgs(), func(a string) bool { return strings.ContainsRune(a, 0) }) {
		return nil, errors.New("command and args must not contain NUL bytes")
	}
	if e.GetShell() {
		// "$0" of the script is the check's name; args are $1, $2, ...
		return &execProber{
			path:    shellPath,
			args:    append([]string{"-c", e.GetCommand(), check.GetName()}, e.GetArgs()...),
			display: "sh -c " + clean(e.GetCommand(), 64),
		}, nil
	}
	return &execProber{path: e.GetCommand(), args: slices.Clone(e.GetArgs()), display: e.GetCommand()}, nil
}

func (p *execProber) Probe(ctx context.Context) (string, error) {
	// The command writes into a pipe of ours rather than one exec.Cmd
	// copies from, so that Wait returns when the command ends, even if
	// something it started still holds the pipe.
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("%s: %w", p.display, err)
	}
	defer pr.Close()
	cmd := exec.CommandContext(ctx, p.path, p.args...)
	cmd.Env = commandEnv()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On timeout or cancellation: the whole group, not just the leader.
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	start := time.Now()
	err = cmd.Start()
	pw.Close() // the child has its copy; ours would keep the pipe open
	if err != nil {
		return "", fmt.Errorf("%s: %w", p.display, err)
	}
	out := make(chan string, 1)
	go func() { out <- readHead(pr, MaxOutput) }()

	err = cmd.Wait()
	// Whatever the command left behind in its group goes with it. The
	// group's id cannot be reused while a member lives.
	_ = killGroup(cmd.Process.Pid)
	_ = pr.SetReadDeadline(time.Now().Add(outputGrace))
	output := clean(<-out, MaxOutput)

	switch {
	case err == nil:
		return output, nil
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return output, fmt.Errorf("%s: killed after the timeout (%s)", p.display, time.Since(start).Round(time.Millisecond))
	case ctx.Err() != nil:
		return output, fmt.Errorf("%s: killed: %w", p.display, ctx.Err())
	}
	return output, fmt.Errorf("%s: %w", p.display, err)
}

// commandEnv is the environment of a check's command: the checker's, which
// is the supervisor's, less go-plugin's own variables (its magic cookie and
// PLUGIN_*), which are for the checker and not for what it runs.
func commandEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return name == rpc.Handshake.MagicCookieKey || strings.HasPrefix(name, "PLUGIN_")
	})
}

// killGroup SIGKILLs process group pgid; a group already gone is no error.
func killGroup(pgid int) error {
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// readHead reads r to its end (or read error) and returns the first limit
// bytes; the rest is dropped, but still read so the writer never blocks on
// a full pipe.
func readHead(r io.Reader, limit int) string {
	var head bytes.Buffer
	_, _ = io.Copy(&head, io.LimitReader(r, int64(limit)+1))
	_, _ = io.Copy(io.Discard, r)
	return head.String()
}

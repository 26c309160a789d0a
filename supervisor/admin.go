package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
)

// Admin socket: one JSON request line in, one JSON response line out. The
// socket file is the owner's only (0600) and peers must be root or the
// supervisor's own user.
const (
	adminConnTimeout = 30 * time.Second
	// adminLoopWait bounds how long a maintenance request waits for the
	// policy loop, which may be in a plugin call (2s each at most).
	adminLoopWait   = 15 * time.Second
	maxAdminRequest = 64 << 10
)

// Admin commands.
const (
	AdminStatus      = "status"
	AdminMaintenance = "maintenance"
	// AdminReload has the supervisor re-read its config file and apply
	// it (ExecReload), answering once applied or with why it was refused.
	AdminReload = "reload"
)

// AdminRequest is what `keep-vip-supervisor status` and `maintenance` send.
type AdminRequest struct {
	Command string `json:"command"`
	// On is maintenance's new state.
	On     *bool  `json:"on,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// AdminResponse carries the status after the command, or the error.
type AdminResponse struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Warning string  `json:"warning,omitempty"`
	Status  *Status `json:"status,omitempty"`
}

// adminRequest is an admin command on its way to the policy loop.
type adminRequest struct {
	req   AdminRequest
	reply chan error
}

type adminServer struct {
	path string
	ln   *net.UnixListener
	o    *ops
	log  zerolog.Logger
	wg   sync.WaitGroup
	uid  int
	// ctx ends when the server closes, so no request holds up an exit.
	ctx    context.Context
	cancel context.CancelFunc
}

// listenAdmin opens the admin socket at path. A socket another supervisor
// still answers on is an error; a stale one (left by a crash) is replaced.
// The socket is made at a temporary name, restricted to 0600, then renamed
// into place, so it is never reachable with looser permissions.
func listenAdmin(path string, o *ops, log zerolog.Logger) (*adminServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, errors.New("another keep-vip-supervisor answers on it; give each member on this host its own adminSocket")
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d", filepath.Base(path), os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	a := &adminServer{path: path, ln: ln, o: o, log: log.With().Str("component", "admin").Logger(), uid: os.Geteuid()}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.wg.Add(1)
	go a.serve()
	return a, nil
}

func (a *adminServer) serve() {
	defer a.wg.Done()
	for {
		c, err := a.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Error().Err(err).Msg("admin socket accept failed")
			}
			return
		}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.handle(c) }()
	}
}

func (a *adminServer) close() {
	if a == nil {
		return
	}
	_ = a.ln.Close()
	a.cancel()
	// Remove our socket only: a successor may already have replaced it.
	if st, err := os.Lstat(a.path); err == nil && st.Mode().Type() == os.ModeSocket {
		if c, err := net.DialTimeout("unix", a.path, 100*time.Millisecond); err != nil {
			_ = os.Remove(a.path)
		} else {
			_ = c.Close()
		}
	}
	a.wg.Wait()
}

// peerAllowed lets root and the supervisor's own user in; the file mode
// already keeps others out, this also covers a socket moved or re-chmodded.
func (a *adminServer) peerAllowed(c *net.UnixConn) (bool, string) {
	raw, err := c.SyscallConn()
	if err != nil {
		return false, err.Error()
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return false, err.Error()
	}
	if cerr != nil {
		return false, cerr.Error()
	}
	if cred.Uid == 0 || int(cred.Uid) == a.uid {
		return true, ""
	}
	return false, fmt.Sprintf("uid %d pid %d", cred.Uid, cred.Pid)
}

func (a *adminServer) handle(c *net.UnixConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(adminConnTimeout))
	enc := json.NewEncoder(c)
	if ok, who := a.peerAllowed(c); !ok {
		a.log.Warn().Str("peer", who).Msg("admin request refused")
		_ = enc.Encode(AdminResponse{Error: "permission denied"})
		return
	}
	line, err := bufio.NewReader(io.LimitReader(c, maxAdminRequest)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var req AdminRequest
	if err := json.Unmarshal(line, &req); err != nil {
		_ = enc.Encode(AdminResponse{Error: "bad request: " + err.Error()})
		return
	}
	resp := a.do(req)
	_ = enc.Encode(resp)
}

func (a *adminServer) do(req AdminRequest) AdminResponse {
	switch req.Command {
	case AdminStatus:
	case AdminMaintenance:
		if req.On == nil {
			return AdminResponse{Error: "maintenance: say on or off"}
		}
		a.log.Info().Bool("on", *req.On).Str("reason", req.Reason).Msg("maintenance requested")
		r := &adminRequest{req: req, reply: make(chan error, 1)}
		ctx, cancel := context.WithTimeout(a.ctx, adminLoopWait)
		defer cancel()
		if err := a.o.s.send(ctx, event{admin: r}); err != nil {
			return AdminResponse{Error: "the supervisor's policy loop is busy; try again"}
		}
		select {
		case err := <-r.reply:
			if err != nil {
				st := a.o.status()
				return AdminResponse{OK: true, Warning: err.Error(), Status: &st}
			}
		case <-ctx.Done():
			return AdminResponse{Error: "the supervisor's policy loop did not answer in time; check `status` again"}
		}
	case AdminReload:
		ctx, cancel := context.WithTimeout(a.ctx, adminLoopWait)
		defer cancel()
		if err := a.o.s.reload(ctx); err != nil {
			// With the status, so the command can log who refused.
			st := a.o.status()
			return AdminResponse{Error: oneLine(err.Error()), Status: &st}
		}
	default:
		return AdminResponse{Error: fmt.Sprintf("unknown command %q", req.Command)}
	}
	st := a.o.status()
	st.Raft = a.o.raftInfo()
	st.BGP = a.o.bgpInfo()
	return AdminResponse{OK: true, Status: &st}
}

// handleAdmin runs an admin command on the policy loop.
func (p *policy) handleAdmin(r *adminRequest) {
	var err error
	if r.req.Command == AdminMaintenance && p.s.ops != nil {
		err = p.setMaintenance(*r.req.On, r.req.Reason)
	}
	r.reply <- err
}

// AdminCall sends one request to the supervisor at socket.
func AdminCall(socket string, req AdminRequest, timeout time.Duration) (*AdminResponse, error) {
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		var se syscall.Errno
		switch {
		case errors.As(err, &se) && (se == syscall.ENOENT || se == syscall.ECONNREFUSED):
			return nil, fmt.Errorf("no supervisor answers on %s (is keep-vip-supervisor running?): %w", socket, err)
		case errors.As(err, &se) && se == syscall.EACCES:
			return nil, fmt.Errorf("%s: permission denied (run as root)", socket)
		}
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	raw, _ := json.Marshal(req)
	if _, err := c.Write(append(raw, '\n')); err != nil {
		return nil, fmt.Errorf("send to %s: %w", socket, err)
	}
	var resp AdminResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("read answer from %s: %w", socket, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// FormatStatus writes st for people.
func FormatStatus(w io.Writer, st *Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	yes := func(b bool, y, n string) string {
		if b {
			return y
		}
		return n
	}
	fmt.Fprintf(tw, "member\t%s (%s), cluster %s\n", st.Member, st.Address, st.Cluster)
	fmt.Fprintf(tw, "supervisor\tpid %d, version %s, up %s%s\n", st.PID, st.Version,
		time.Since(st.Started).Round(time.Second), yes(st.Ready, "", ", starting"))
	role := st.Role
	if st.Role == "out" {
		role = "out of the election"
	} else {
		role = fmt.Sprintf("%s, term %d", st.Role, st.Term)
	}
	fmt.Fprintf(tw, "role\t%s\n", role)
	leader := st.Leader
	if leader == "" {
		leader = "unknown"
	}
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	holder := st.VIPHolder
	if holder == "" {
		holder = "unknown"
	}
	fmt.Fprintf(tw, "VIP\t%s on %s: holder %s; %s\n", st.VIP, st.Interface, holder,
		yes(st.HoldsVIP, "held by this member", "not held by this member"))
	why := st.Unhealthy
	if len(why) == 0 && !st.ChecksOK {
		why = append(why, "checks failing")
	}
	if len(why) == 0 && !st.InterfaceOK {
		why = append(why, "interface unusable")
	}
	// Maintenance counts as unhealthy (the JSON's healthy is false).
	if len(why) == 0 && !st.Healthy && st.Maintenance.On {
		why = append(why, "maintenance")
	}
	health := "healthy"
	if len(why) > 0 {
		health = "unhealthy: " + strings.Join(why, "; ")
	}
	fmt.Fprintf(tw, "health\t%s\n", health)
	m := "off"
	if st.Maintenance.On {
		m = "ON since " + st.Maintenance.Since.Format(time.RFC3339)
		if st.Maintenance.Reason != "" {
			m += " (" + st.Maintenance.Reason + ")"
		}
	}
	fmt.Fprintf(tw, "maintenance\t%s\n", m)
	_ = tw.Flush()

	fmt.Fprintln(w, "\nchecks:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(st.Checks) == 0 {
		fmt.Fprintln(tw, "  (no verdict yet)")
	}
	for _, c := range st.Checks {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, c.Address, yes(c.Healthy, "ok", "FAILING"), c.Error)
	}
	_ = tw.Flush()

	formatRaft(w, st.Raft)
	formatBGP(w, st.BGP)

	fmt.Fprintln(w, "\nplugins:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range st.Plugins {
		pid := "-"
		if p.PID > 0 {
			pid = fmt.Sprint(p.PID)
		}
		fmt.Fprintf(tw, "  %s\t%s\tpid %s\trestarts %d\t%s\n", p.Name, yes(p.Up, "up", "down"), pid, p.Restarts, p.Path)
		if p.Error != "" {
			fmt.Fprintf(tw, "  \tcannot start: %s\n", p.Error)
		}
	}
	_ = tw.Flush()

	if len(st.Hooks) > 0 {
		fmt.Fprintln(w, "\nhooks:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, h := range st.Hooks {
			fmt.Fprintf(tw, "  %s\truns %d\tfailures %d\t%s\n", h.Event, h.Runs, h.Failures, h.Command)
		}
		_ = tw.Flush()
	}
}

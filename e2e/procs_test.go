package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procInfo is what the harness needs to know of one process in /proc.
type procInfo struct {
	PID   int
	PPID  int
	State byte   // from /proc/PID/stat; 'Z' is a zombie
	Exe   string // target of /proc/PID/exe, without " (deleted)"
	Argv0 string // first word of /proc/PID/cmdline: the path it was run as
	NetNS string // target of /proc/PID/ns/net, "net:[INODE]"
}

// Name is the base name the program was run as, which is what the
// supervisor runs a plugin by even through a symlink; the executable's base
// name when argv[0] is unreadable. (comm is cut at 15 bytes, which would
// make keep-vip-announcer and keep-vip-announ... look alike, so not comm.)
func (p procInfo) Name() string {
	if p.Argv0 != "" {
		return filepath.Base(p.Argv0)
	}
	return filepath.Base(p.Exe)
}

// listProcesses reads every live (non-zombie) process. Processes that exit
// while being read are skipped.
func listProcesses() ([]procInfo, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var procs []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := readProcess(pid)
		if ok && p.State != 'Z' {
			procs = append(procs, p)
		}
	}
	return procs, nil
}

func readProcess(pid int) (procInfo, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	// "PID (comm) S PPID ...": comm may hold spaces and parentheses, so
	// parse from the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return procInfo{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procInfo{}, false
	}
	p := procInfo{PID: pid, PPID: ppid, State: f[0][0]}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	p.Exe = strings.TrimSuffix(exe, " (deleted)")
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		p.Argv0, _, _ = strings.Cut(string(cmdline), "\x00")
	}
	p.NetNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return p, true
}

// processAlive is true while pid exists and is not a zombie (an orphan's
// zombie may linger when PID 1 does not reap).
func processAlive(pid int) bool {
	p, ok := readProcess(pid)
	return ok && p.State != 'Z'
}

// childrenOf lists the live children of ppid (the kernel's
// /proc/PID/task/*/children needs CONFIG_PROC_CHILDREN, so scan instead).
func childrenOf(ppid int) ([]procInfo, error) {
	procs, err := listProcesses()
	if err != nil {
		return nil, err
	}
	var kids []procInfo
	for _, p := range procs {
		if p.PPID == ppid {
			kids = append(kids, p)
		}
	}
	return kids, nil
}

// netnsID is the "net:[INODE]" a process in the named namespace shows in
// /proc/PID/ns/net.
func netnsID(name string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(netnsRunDir, name), &st); err != nil {
		return "", fmt.Errorf("stat netns %s: %w", name, err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino), nil
}

// processesInNetns lists the live processes inside the named namespace.
func processesInNetns(name string) ([]procInfo, error) {
	id, err := netnsID(name)
	if err != nil {
		return nil, err
	}
	procs, err := listProcesses()
	if err != nil {
		return nil, err
	}
	var in []procInfo
	for _, p := range procs {
		if p.NetNS == id {
			in = append(in, p)
		}
	}
	return in, nil
}

// keepVIPProcessesInNetns lists the supervisor and plugin processes inside
// the named namespace: those run from binDir or under a keep-vip binary name.
func keepVIPProcessesInNetns(name, binDir string) ([]procInfo, error) {
	procs, err := processesInNetns(name)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{supervisorName: true}
	for _, n := range pluginNames {
		names[n] = true
	}
	var kv []procInfo
	for _, p := range procs {
		if names[p.Name()] || filepath.Dir(p.Exe) == binDir {
			kv = append(kv, p)
		}
	}
	return kv, nil
}

func describeProcesses(procs []procInfo) string {
	if len(procs) == 0 {
		return "none"
	}
	parts := make([]string, len(procs))
	for i, p := range procs {
		parts[i] = fmt.Sprintf("%s[%d]", p.Name(), p.PID)
	}
	return strings.Join(parts, " ")
}

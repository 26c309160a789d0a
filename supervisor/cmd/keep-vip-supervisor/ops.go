package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/supervisor"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// adminTimeout bounds a status or maintenance call; maintenance waits for
// the VIP to be given up, which the supervisor bounds to a few seconds.
const adminTimeout = 20 * time.Second

// runOps is `status`, `maintenance on|off` and `reload`, over the admin
// socket.
func runOps(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", config.DefaultPath, "config file (for adminSocket)")
	fs.StringVar(path, "config", config.DefaultPath, "config file (for adminSocket)")
	socket := fs.String("socket", "", "admin socket (default: the config's adminSocket, else "+config.DefaultAdminSocket+")")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	reason := fs.String("reason", "", "maintenance on: why, shown by status")
	// Flags may come before or after on|off.
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	req := supervisor.AdminRequest{Command: supervisor.AdminStatus}
	switch {
	case cmd == "status" && len(pos) == 0:
	case cmd == "reload" && len(pos) == 0:
		req = supervisor.AdminRequest{Command: supervisor.AdminReload}
	case cmd == "maintenance" && len(pos) == 1 && (pos[0] == "on" || pos[0] == "off"):
		on := pos[0] == "on"
		req = supervisor.AdminRequest{Command: supervisor.AdminMaintenance, On: &on, Reason: *reason}
	case cmd == "maintenance" && len(pos) == 0:
		fmt.Fprintln(stderr, "keep-vip-supervisor maintenance: say on or off")
		return 2
	default:
		fmt.Fprintf(stderr, "keep-vip-supervisor %s: unexpected argument %q\n", cmd, pos[len(pos)-1])
		return 2
	}

	sock := *socket
	if sock == "" && cmd == "reload" {
		// The supervisor reads the file and says what is wrong with it;
		// here it only names the socket, the default if it does not load.
		sock = config.DefaultAdminSocket
		if cfg, err := config.Load(*path); err == nil {
			sock = cfg.AdminSocket
		}
	}
	if sock == "" {
		explicit := false
		fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "c" || f.Name == "config" })
		cfg, err := config.Load(*path)
		switch {
		case err == nil:
			sock = cfg.AdminSocket
		case explicit:
			printErr(stderr, *path, err)
			return 1
		default:
			// No usable default config: the default socket is the best guess.
			sock = config.DefaultAdminSocket
		}
	}
	resp, err := supervisor.AdminCall(sock, req, adminTimeout)
	if req.Command == supervisor.AdminReload {
		return reloaded(resp, err, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "keep-vip-supervisor %s: %v\n", cmd, err)
		return 1
	}
	if resp.Warning != "" {
		fmt.Fprintf(stderr, "keep-vip-supervisor %s: warning: %s\n", cmd, resp.Warning)
	}
	st := resp.Status
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	if req.Command == supervisor.AdminMaintenance {
		if *req.On {
			fmt.Fprintf(stdout, "maintenance on: %s %s and is out of the election until `keep-vip-supervisor maintenance off`\n",
				st.Member, map[bool]string{true: "STILL HOLDS THE VIP", false: "does not hold the VIP"}[st.HoldsVIP])
		} else {
			fmt.Fprintf(stdout, "maintenance off: %s rejoins the election\n", st.Member)
		}
		return 0
	}
	supervisor.FormatStatus(stdout, st)
	return 0
}

// opsUsage is the usage of runOps's commands.
const opsUsage = `  status    [-c FILE] [--socket PATH] [--json]
                            this member: role, term, leader, VIP, checks, plugins
  maintenance on|off [-c FILE] [--socket PATH] [--reason TEXT]
                            on: give up the VIP and stay out of the election
                            (kept across restarts) until off
`

// reloaded reports reload's answer: 0 once applied, 1 with the reason when
// refused. Under systemd (ExecReload) it is a journal line with the
// member's fields, like every other line of the unit; elsewhere plain text.
func reloaded(resp *supervisor.AdminResponse, err error, stdout, stderr io.Writer) int {
	if resp != nil && resp.Status != nil && supervisor.JournalStdout() {
		st := resp.Status
		log := supervisor.NewLogger("journal", zerolog.InfoLevel, os.Stdout).With().
			Str("cluster", st.Cluster).Str("member", st.Member).Logger()
		if err != nil {
			log.Error().Str("error", err.Error()).Msg("reload refused")
			return 1
		}
		log.Info().Msg("reload applied")
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "keep-vip-supervisor reload: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "config reloaded: %s applied it\n", resp.Status.Member)
	return 0
}

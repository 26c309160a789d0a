// Command keep-vip-supervisor runs one keep-vip member: it starts the
// elector, announcer, checker and balancer plugins and owns the VIP policy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/keep-vip/keep-vip/etc"
	"github.com/keep-vip/keep-vip/rpc"
	"github.com/keep-vip/keep-vip/supervisor"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: keep-vip-supervisor <command> [flags]

commands:
  start     -c FILE         run this member
  validate  -c FILE [--host] check a config file (with --host: also this host)
  cleanup   -c FILE         remove the VIP from the interface
  recover   -c FILE --force rewrite the Raft configuration stored in dataDir
                            to the file's members (quorum lost for good; the
                            member must be stopped; see README)
  reload    -c FILE         have the running supervisor re-read its config
                            (ExecReload); exit 1 with the reason if refused
  example-config            print the default config file
  version                   print the version
` + opsUsage

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", config.DefaultPath, "config file")
	fs.StringVar(path, "config", config.DefaultPath, "config file")
	host := fs.Bool("host", false, "validate: also check this host (interface, local member, plugin binaries)")
	force := fs.Bool("force", false, "recover: really rewrite the stored Raft configuration")
	switch cmd {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "keep-vip-supervisor", version)
		return 0
	case "example-config":
		_, _ = stdout.Write(etc.DefaultConfig)
		return 0
	case "status", "maintenance", "reload":
		return runOps(cmd, args, stdout, stderr)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	case "start", "validate", "cleanup", "recover":
	default:
		fmt.Fprintf(stderr, "keep-vip-supervisor: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keep-vip-supervisor %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}

	var err error
	switch cmd {
	case "validate":
		var cfg *config.Config
		var notes []string
		cfg, notes, err = supervisor.Validate(context.Background(), *path, *host)
		for _, n := range notes {
			fmt.Fprintf(stderr, "keep-vip-supervisor: %s: note: %s\n", *path, n)
		}
		if err == nil {
			fmt.Fprintf(stdout, "%s: configuration is valid\n", *path)
			if *host {
				// A difference is the normal middle of a membership
				// change, so it is said, not refused.
				if drift, derr := supervisor.MembersDrift(cfg); derr != nil {
					fmt.Fprintf(stderr, "keep-vip-supervisor: %s: warning: cannot compare members with the stored Raft configuration: %v\n", *path, derr)
				} else if drift != "" {
					fmt.Fprintf(stderr, "keep-vip-supervisor: %s: note: %s\n", *path, drift)
				}
			}
		}
	case "recover":
		err = recoverMembers(*path, *force, stdout)
	case "cleanup":
		err = cleanup(*path)
	case "start":
		err = start(*path)
	}
	if err != nil {
		printErr(stderr, *path, err)
		return 1
	}
	return 0
}

// printErr prints one line per problem, each naming the file.
func printErr(w io.Writer, path string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			fmt.Fprintf(w, "keep-vip-supervisor: %s: %s\n", path, line)
		}
	}
}

func cleanup(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	return supervisor.Cleanup(context.Background(), cfg, supervisor.NewLogger(cfg.Log.Format, cfg.LogLevel(), os.Stdout))
}

func start(path string) error {
	rpc.ApplyFootprint(rpc.Supervisor)
	supervisor.Version = version
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := supervisor.NewLogger(cfg.Log.Format, cfg.LogLevel(), os.Stdout).
		With().Str("cluster", cfg.Cluster).Logger()
	s, err := supervisor.New(cfg, log)
	if err != nil {
		return err
	}
	log = s.Log()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is caught before anything slow runs: its default would kill
	// the process (a reload asked for while it starts waits for the loop).
	defer watchHUP(ctx, path, s, log)()
	// Every plugin validates its part first, so a config a plugin refuses
	// stops the start here, with its line, instead of a plugin that keeps
	// failing to start.
	if err := s.ValidatePlugins(ctx, cfg); err != nil {
		return err
	}
	log.Info().Str("version", version).Str("config", path).Msg("starting")
	if err := s.Run(ctx); err != nil {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		log.Info().Msg("stopped by signal")
	}
	return nil
}

// recoverMembers is `recover`: only with --force does it write anything.
func recoverMembers(path string, force bool, stdout io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if !force {
		return errors.New("recover rewrites the Raft configuration stored in " + cfg.DataDir +
			" to this file's members; run it only when a quorum is lost for good and on every survivor with the same members (README: Changing members), then add --force")
	}
	voters, err := supervisor.Recover(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: the stored Raft configuration is now: %s\nstart this member, and every other survivor recovered with the same members\n", cfg.DataDir, voters)
	return nil
}

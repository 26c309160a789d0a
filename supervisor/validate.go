package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/keep-vip/keep-vip/rpc"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// Plugin validation: each plugin is the authority on its part of the
// config. The supervisor checks what the file means to it (keys, types,
// durations, bounds the contract states in rpc/limits), then asks every
// configured plugin binary, the built-in one or the one a plugins.* key
// names, to validate its part over the Validate RPC: a swapped checker
// validates its own check types. `validate`, start and reload all do, so a
// config is refused whole, before anything of it is applied.

// sections names each plugin's part of the file, for its error lines.
var sections = map[string]string{
	rpc.KindElector:   "members/raft",
	rpc.KindAnnouncer: "interface/vip/vips/announce/bgp",
	rpc.KindChecker:   "checks",
	rpc.KindBalancer:  "loadBalancers",
}

// validateSpawners start the validating plugins (spawn.go says why a
// spawner), one per kind so that the four start in parallel: a spawner
// waits for each plugin's handshake. Made on first use.
var validateSpawners = sync.OnceValue(func() map[string]*spawner {
	out := map[string]*spawner{}
	for _, kind := range rpc.Kinds {
		out[kind] = newSpawner()
	}
	return out
})

// ValidatePlugins starts every plugin binary at once, asks each to validate
// its part of cfg, and stops it. A refusal is an error line naming the
// section, the plugin's own line and the binary. A binary that predates the
// Validate RPC, or (unless required) one that is not installed, is a note:
// its part is then checked only when it is configured. local is this host's
// member, or nil when not known (validate without --host).
func ValidatePlugins(ctx context.Context, cfg *config.Config, local *config.Member, required bool) (notes []string, err error) {
	member := config.Member{}
	if local != nil {
		member = *local
	} else if len(cfg.Members) > 0 {
		member = cfg.Members[0] // any member will do for the checks
	}
	elector := cfg.ElectorConfig(member)
	if local != nil {
		// The TLS files are this host's: read only when it is known.
		tls, err := cfg.ReadRaftTLS()
		if err != nil {
			return nil, err
		}
		elector.Tls = tls
	}
	parts := map[string]proto.Message{
		rpc.KindElector:   elector,
		rpc.KindAnnouncer: cfg.AnnouncerConfigFor(member),
		rpc.KindChecker:   cfg.CheckerConfig(),
		rpc.KindBalancer:  cfg.BalancerConfig(),
	}
	configured := cfg.PluginPaths()
	type answer struct{ note, refusal string }
	answers := make([]answer, len(rpc.Kinds))
	var wg sync.WaitGroup
	for i, kind := range rpc.Kinds {
		path, ferr := FindPlugin(kind, configured[kind])
		if ferr != nil {
			if required || configured[kind] != "" {
				answers[i].refusal = ferr.Error()
			} else {
				answers[i].note = fmt.Sprintf("%s: not checked by its plugin: %v", sections[kind], ferr)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch verr := validateWith(ctx, kind, path, parts[kind]); {
			case verr == nil:
			case errors.Is(verr, errStartValidate):
				answers[i].refusal = fmt.Sprintf("plugins.%s: %s cannot validate its part (%s): %s", kind, path, sections[kind], oneLine(verr.Error()))
			case errors.Is(verr, rpc.ErrNoValidate):
				answers[i].note = fmt.Sprintf("%s: %s predates the Validate RPC: its part is checked only when it is configured", sections[kind], path)
			default:
				answers[i].refusal = fmt.Sprintf("%s: %s (refused by %s)", sections[kind], oneLine(verr.Error()), path)
			}
		}()
	}
	wg.Wait()
	var refusals []string
	for _, a := range answers {
		if a.note != "" {
			notes = append(notes, a.note)
		}
		if a.refusal != "" {
			refusals = append(refusals, a.refusal)
		}
	}
	if len(refusals) > 0 {
		return notes, errors.New(strings.Join(refusals, "\n"))
	}
	return notes, nil
}

// errStartValidate marks a plugin that did not start to validate.
var errStartValidate = errors.New("did not start")

// validateWith runs the plugin at path for one Validate of part: nil, the
// plugin's refusal, rpc.ErrNoValidate, or why it did not start.
func validateWith(ctx context.Context, kind, path string, part proto.Message) error {
	var verdict error
	r := &runner{
		kind:  kind,
		path:  path,
		log:   zerolog.Nop(),
		spawn: validateSpawners()[kind],
		setup: func(ctx context.Context, impl any) error {
			v, ok := impl.(rpc.ConfigValidator)
			if !ok {
				verdict = rpc.ErrNoValidate
				return nil
			}
			verdict = v.ValidateConfig(ctx, part)
			return nil
		},
	}
	inst, err := r.start(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", errStartValidate, plainError(err))
	}
	r.stop(inst)
	return verdict
}

// ValidatePlugins is the package's ValidatePlugins for this member, at
// start and reload: every plugin binary must be there, and a note is
// logged as a warning.
func (s *Supervisor) ValidatePlugins(ctx context.Context, cfg *config.Config) error {
	local := s.local
	notes, err := ValidatePlugins(ctx, cfg, &local, true)
	for _, n := range notes {
		s.log.Warn().Msg(n)
	}
	return err
}

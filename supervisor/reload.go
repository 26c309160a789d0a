package supervisor

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/keep-vip/keep-vip/rpc"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// reloadRequest carries a config, loaded and validated, to the policy loop.
type reloadRequest struct {
	cfg   *config.Config
	reply chan error
}

// liveConfig is what the runners configure a starting plugin with: the
// config the supervisor started with, with the parts reloads applied. Each
// value stored is a fresh copy, never modified afterwards.
func (s *Supervisor) liveConfig() *config.Config {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.live == nil {
		return s.cfg
	}
	return s.live
}

// setupConfig is the live config, recorded as what kind's starting plugin
// is configured with.
func (s *Supervisor) setupConfig(kind string) *config.Config {
	c := s.liveConfig()
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.startedWith == nil {
		s.startedWith = map[string]*config.Config{}
	}
	s.startedWith[kind] = c
	return c
}

// staleStart tells whether kind's plugin, just up, was configured with a
// config that a reload has replaced since.
func (s *Supervisor) staleStart(kind string) bool {
	live := s.liveConfig()
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	used, ok := s.startedWith[kind]
	return ok && used != live
}

func (s *Supervisor) setLive(c config.Config) {
	s.liveMu.Lock()
	s.live = &c
	s.liveMu.Unlock()
}

// Reload applies cfg, freshly loaded and validated, to the running member:
// the balancer's load balancers and drain timeout, the checks, and the
// members (the elector's leader adds, promotes and removes). Other
// changes need a restart; they are logged, not applied. It returns once the
// policy loop has applied what it could, with an error naming what failed;
// a part that fails keeps running its old config.
func (s *Supervisor) Reload(ctx context.Context, cfg *config.Config) error {
	r := &reloadRequest{cfg: cfg, reply: make(chan error, 1)}
	if err := s.send(ctx, event{reload: r}); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("reload: %w", ctx.Err())
	}
}

// reload runs on the policy loop. A part's new config is made live before
// its plugin is configured, so a plugin restarting meanwhile starts with
// it; if the plugin refuses it, the old part is made live again.
func (p *policy) reload(r *reloadRequest) {
	next := r.cfg
	cur := *p.s.liveConfig()
	if keys := restartOnlyChanges(&cur, next); len(keys) > 0 {
		p.log.Warn().Strs("keys", keys).Msg("reload: changes to these keys need a restart of keep-vip-supervisor; not applied")
	}
	var applied []string
	var errs []error

	cand := cur
	cand.Checks = next.Checks
	if !proto.Equal(cur.CheckerConfig(), cand.CheckerConfig()) {
		p.s.setLive(cand)
		if err := p.configurePlugin(rpc.KindChecker, &cand); err != nil {
			p.s.setLive(cur)
			errs = append(errs, fmt.Errorf("checks: %w", err))
		} else {
			cur, applied = cand, append(applied, "checks")
		}
	}

	cand = cur
	cand.Members = next.Members
	if !reflect.DeepEqual(cur.Members, cand.Members) {
		if err := p.reloadMembers(&cand); err != nil {
			p.s.setLive(cur)
			errs = append(errs, fmt.Errorf("members: %w", err))
		} else {
			cur, applied = cand, append(applied, "members")
		}
	}

	cand = cur
	cand.LoadBalancers, cand.DrainTimeout = next.LoadBalancers, next.DrainTimeout
	if !proto.Equal(cur.BalancerConfig(), cand.BalancerConfig()) {
		p.s.setLive(cand)
		if err := p.configurePlugin(rpc.KindBalancer, &cand); err != nil {
			p.s.setLive(cur)
			errs = append(errs, fmt.Errorf("loadBalancers: %w", err))
		} else {
			cur, applied = cand, append(applied, "loadBalancers")
		}
	}

	err := errors.Join(errs...)
	switch {
	case err != nil:
		p.log.Error().Strs("applied", applied).Str("error", oneLine(err.Error())).Msg("reload: part of the config kept running its old version")
	case len(applied) == 0:
		p.log.Info().Msg("config reloaded: nothing to change")
	default:
		p.log.Info().Strs("applied", applied).Msg("config reloaded")
	}
	r.reply <- err
}

// configurePlugin hands cfg's part to the running plugin of kind; with no
// plugin running, its next start picks the part up.
func (p *policy) configurePlugin(kind string, cfg *config.Config) error {
	impl := p.impls[kind]
	if impl == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	switch kind {
	case rpc.KindChecker:
		return impl.(rpc.Checker).Configure(ctx, cfg.CheckerConfig())
	case rpc.KindBalancer:
		return impl.(rpc.Balancer).Configure(ctx, cfg.BalancerConfig())
	case rpc.KindElector:
		return impl.(rpc.Elector).Configure(ctx, cfg.ElectorConfig(p.s.local))
	}
	return nil
}

// catchUpReload configures a plugin that has just come up again with the
// live config when a reload landed while it was starting: its setup read
// the config before the reload made the new one live.
func (p *policy) catchUpReload(kind string) {
	if !p.s.staleStart(kind) {
		return
	}
	live := p.s.setupConfig(kind)
	if err := p.configurePlugin(kind, live); err != nil {
		p.log.Error().Str("plugin", kind).Err(err).Msg("reload: a plugin started during a reload refused the reloaded config; restarting it")
		p.s.runners[kind].kill()
		return
	}
	p.log.Info().Str("plugin", kind).Msg("reload: a plugin started during a reload; configured it with the reloaded config")
}

// reloadMembers hands a new member list to the running elector, whose
// leader brings Raft's configuration in line with it (elector/reconcile.go).
// This member must stay in the list at its own address: its listener is
// bound to it, and a member leaves the cluster by being stopped.
func (p *policy) reloadMembers(cand *config.Config) error {
	self := p.s.local
	var found *config.Member
	for i := range cand.Members {
		if cand.Members[i].ID == self.ID {
			found = &cand.Members[i]
		}
	}
	switch {
	case found == nil:
		return fmt.Errorf("this member (%s) is not in the new list: stop it instead, and reload the others (README: Changing members)", self.ID)
	case found.Address != self.Address:
		return fmt.Errorf("this member's own address changes from %s to %s: restart keep-vip-supervisor here to apply it", self.Address, found.Address)
	}
	p.s.setLive(*cand)
	return p.configurePlugin(rpc.KindElector, cand)
}

// restartOnlyChanges lists the top-level keys whose change a reload does
// not apply.
func restartOnlyChanges(cur, next *config.Config) []string {
	a, b := *cur, *next
	a.Checks, a.LoadBalancers, a.DrainTimeout, a.Members = nil, nil, 0, nil
	b.Checks, b.LoadBalancers, b.DrainTimeout, b.Members = nil, nil, 0, nil
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var keys []string
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			key := va.Type().Field(i).Tag.Get("koanf")
			if key == "" {
				key = va.Type().Field(i).Name
			}
			keys = append(keys, key)
		}
	}
	return keys
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

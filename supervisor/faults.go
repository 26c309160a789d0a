package supervisor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Faults: what keeps a member from serving the VIP besides its checks, its
// interface and maintenance. A VIP the announcer cannot put on the
// interface (no CAP_NET_ADMIN, the interface gone, the kernel refusing the
// address), or that vanishes and cannot be put back, and a plugin that
// cannot start, each make the member unhealthy under a reason naming the
// error, the way a failing check does: it releases, hands leadership over
// and leaves the election.

const (
	// vipFaultBound is how long acquiring the VIP, or getting back a held
	// VIP that vanished, may keep failing before the member counts as
	// unhealthy. The policy retries on every pass meanwhile.
	vipFaultBound = 2 * time.Second
	// vipRetryAfter is how long a member that could not hold the VIP
	// stays out before it probes again whether it could now: it asks its
	// announcer to take the VIPs off the interface, which it does anyway
	// while out of the election and which needs the same right as adding
	// them. If that works it rejoins the election (as a follower: the VIP
	// does not move back); a failure that the probe cannot see shows again
	// at its next acquire, and it is out again.
	vipRetryAfter = 10 * time.Second
)

// Label values of keep_vip_supervisor_unhealthy{reason}; a plugin that
// cannot start is "<plugin>_start".
const (
	reasonChecks    = "checks"
	reasonChecker   = "checker_down"
	reasonInterface = "interface"
	reasonVIP       = "vip"
)

// unhealthyLabels are every reason label, so each series exists from the
// start at 0.
func unhealthyLabels() []string {
	out := []string{reasonChecks, reasonChecker, reasonInterface, reasonVIP}
	for _, k := range rpc.Kinds {
		out = append(out, k+"_start")
	}
	return out
}

// faults is the policy's record of them; loop-only.
type faults struct {
	vip        string    // why this member cannot hold the VIP; "" while it can
	vipFailing time.Time // since when acquiring or keeping the VIP fails; zero while it does not
	vipRetryAt time.Time // when the probe may clear vip
	startErr   map[string]string
	// missingVIPs lists the VIPs not on the interface; a test replaces it.
	missingVIPs func() ([]string, error)
}

// reason is one cause of unhealthiness: its metric label and its words.
type reason struct{ label, text string }

// eligible is the faults' part of healthy(): a VIP this member cannot hold
// or a plugin that cannot start keeps it out of the election, except for
// the elector itself, whose runner must keep trying it.
func (f *faults) eligible() bool {
	if f.vip != "" {
		return false
	}
	for kind, e := range f.startErr {
		if e != "" && kind != rpc.KindElector {
			return false
		}
	}
	return true
}

// reportedHealthy is the health status, metrics and systemd show: a member
// whose elector cannot start is in no election, whatever its checks say.
func (p *policy) reportedHealthy() bool {
	return p.healthy() && p.faults.startErr[rpc.KindElector] == ""
}

// reasons says why this member is unhealthy; before the checker's first
// verdict it is not yet known to be.
func (p *policy) reasons() []reason {
	var out []reason
	for _, kind := range rpc.Kinds {
		if e := p.faults.startErr[kind]; e != "" {
			out = append(out, reason{kind + "_start", kind + " cannot start: " + e})
		}
	}
	if p.faults.vip != "" {
		out = append(out, reason{reasonVIP, "cannot hold the VIP: " + p.faults.vip})
	}
	if !p.linkOK {
		out = append(out, reason{reasonInterface, "interface " + p.s.cfg.Interface + " unusable"})
	}
	last := p.s.ops.health()
	if !p.checksOK && last != nil {
		var failing []string
		for _, c := range last.Checks {
			if !c.Healthy {
				failing = append(failing, c.Name)
			}
		}
		sort.Strings(failing)
		switch {
		case p.impls[rpc.KindChecker] == nil:
			out = append(out, reason{reasonChecker, "checker down"})
		case len(failing) > 0:
			out = append(out, reason{reasonChecks, "checks failing: " + strings.Join(failing, ", ")})
		default:
			out = append(out, reason{reasonChecks, "checks failing"})
		}
	}
	return out
}

// sickness is reasons in one line, or "" when healthy.
func (o *ops) sickness(p *policy) string {
	var why []string
	for _, r := range p.reasons() {
		why = append(why, r.text)
	}
	return strings.Join(why, "; ")
}

// publishHealth sets the health series.
func (p *policy) publishHealth() {
	on := map[string]bool{}
	for _, r := range p.reasons() {
		on[r.label] = true
	}
	for _, l := range unhealthyLabels() {
		p.s.metrics.unhealthy.WithLabelValues(l).Set(b2f(on[l]))
	}
	p.s.metrics.healthy.Set(b2f(p.reportedHealthy()))
}

// pluginStartFailed records why a plugin did not start; the runner tries
// again with backoff, and the first start that works clears it.
func (p *policy) pluginStartFailed(ev event) {
	if p.shutting || ev.err == nil {
		return
	}
	why := plainError(ev.err)
	if p.faults.startErr[ev.kind] != why {
		p.log.Error().Str("plugin", ev.kind).Str("error", why).Msg("plugin cannot start: this member is unhealthy until it does")
	}
	if p.faults.startErr == nil {
		p.faults.startErr = map[string]string{}
	}
	p.faults.startErr[ev.kind] = why
}

// pluginStarted clears a start failure.
func (p *policy) pluginStarted(kind string) {
	if p.faults.startErr[kind] != "" {
		p.log.Info().Str("plugin", kind).Msg("plugin started after failing to")
		delete(p.faults.startErr, kind)
	}
}

// acquireFailed is a failed Acquire; the next pass retries it.
func (p *policy) acquireFailed(err error) {
	now := time.Now()
	if p.faults.vipFailing.IsZero() {
		p.faults.vipFailing = now
	}
	why := plainError(err)
	p.log.Error().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Str("error", why).
		Dur("failing_for", now.Sub(p.faults.vipFailing)).Msg("acquire VIP failed; retrying")
	p.vipStillFailing(why, now)
}

// verifyHeld runs on every pass while this member holds the VIP: each VIP
// must be on the interface. The announcer puts back at once a VIP someone
// removed; one still missing is asked for again, which returns why it
// cannot be added.
func (p *policy) verifyHeld() {
	missing, err := p.faults.missingVIPs()
	if err != nil {
		p.log.Debug().Err(err).Msg("cannot read the interface's addresses to verify the VIP")
		return
	}
	if len(missing) == 0 {
		p.faults.vipFailing = time.Time{}
		return
	}
	now := time.Now()
	why := fmt.Sprintf("VIP %s missing from %s", strings.Join(missing, ","), p.s.cfg.Interface)
	if a, ok := p.impls[rpc.KindAnnouncer].(rpc.Announcer); ok {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		if err := a.Acquire(ctx, p.acquireRequest()); err != nil {
			why += ": " + plainError(err)
		}
		cancel()
	}
	if p.faults.vipFailing.IsZero() {
		p.faults.vipFailing = now
		p.log.Warn().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Str("error", why).
			Msg("held VIP missing from the interface; acquiring it again")
	}
	p.vipStillFailing(why, now)
}

// vipStillFailing turns a failure that lasted vipFaultBound into a fault.
func (p *policy) vipStillFailing(why string, now time.Time) {
	if now.Sub(p.faults.vipFailing) < vipFaultBound {
		return
	}
	p.log.Error().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Str("error", why).
		Dur("retry_in", vipRetryAfter).Msg("cannot hold the VIP: releasing it and leaving the election")
	p.faults.vip, p.faults.vipFailing, p.faults.vipRetryAt = why, time.Time{}, now.Add(vipRetryAfter)
}

// probeVIP clears a VIP fault once the announcer can change the
// interface's addresses again (see vipRetryAfter).
func (p *policy) probeVIP() {
	a, ok := p.impls[rpc.KindAnnouncer].(rpc.Announcer)
	if p.faults.vip == "" || p.shutting || p.held || !ok || time.Now().Before(p.faults.vipRetryAt) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	err := a.Release(ctx)
	cancel()
	if err != nil {
		why := plainError(err)
		lg := p.log.Debug()
		if why != p.faults.vip {
			lg = p.log.Warn()
		}
		lg.Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Str("error", why).Dur("retry_in", vipRetryAfter).
			Msg("still cannot hold the VIP: staying out of the election")
		p.faults.vip, p.faults.vipRetryAt = why, time.Now().Add(vipRetryAfter)
		return
	}
	p.log.Info().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Str("was", p.faults.vip).
		Msg("the announcer can change the interface's addresses again: rejoining the election")
	p.faults.vip = ""
}

// missingVIPs is faults.missingVIPs as the announcer reads the interface:
// the typed announcer part of its Status.
func (p *policy) missingVIPs() ([]string, error) {
	a, ok := p.impls[rpc.KindAnnouncer].(rpc.Announcer)
	if !ok {
		return nil, errors.New("no announcer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	st, err := a.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("announcer status: %w", err)
	}
	if st.GetAnnouncer() == nil {
		return nil, errors.New("the announcer's status has no announcer part: the announcer binary predates it")
	}
	return st.GetAnnouncer().GetMissingVips(), nil
}

// errText is err's plain text, or "no error".
func errText(err error) string {
	if err == nil {
		return "no error"
	}
	return plainError(err)
}

// grpcPrefix is what gRPC puts before a plugin's own error text.
var grpcPrefix = regexp.MustCompile(`rpc error: code = \w+ desc = `)

// plainError is err on one line (joined errors apart by "; "), without gRPC's wrapping: what status,
// systemd's Status= line and the journal show.
func plainError(err error) string {
	return oneLine(strings.ReplaceAll(grpcPrefix.ReplaceAllString(err.Error(), ""), "\n", "; "))
}

// health is the checker's last verdict; nil-safe so policy tests need no ops.
func (o *ops) health() *pb.Health {
	if o == nil {
		return nil
	}
	return o.lastHealth
}

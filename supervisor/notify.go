package supervisor

import (
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// notifier speaks systemd's notify protocol (Type=notify): READY=1 once the
// plugins are up, STATUS= lines for `systemctl status`, WATCHDOG=1 from the
// policy loop, STOPPING=1 on the way out. Without NOTIFY_SOCKET (not under
// systemd) every call is a no-op.
type notifier struct {
	log      zerolog.Logger
	enabled  bool
	watchdog time.Duration // systemd's WatchdogSec for this process, or 0
}

func newNotifier(log zerolog.Logger) *notifier {
	n := &notifier{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != ""}
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		n.watchdog = wd
	}
	return n
}

func (n *notifier) send(state string) {
	if n == nil || !n.enabled {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Debug().Err(err).Msg("sd_notify failed")
	}
}

// watchdogTicker ticks three times per watchdog period, or never when
// systemd keeps no watchdog on us. The policy loop feeds the watchdog on
// these ticks, so a wedged loop stops feeding and systemd restarts it.
func (n *notifier) watchdogTicker() (<-chan time.Time, func()) {
	if n == nil || n.watchdog <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(n.watchdog / 3)
	return t.C, t.Stop
}

func (n *notifier) feed() { n.send(daemon.SdNotifyWatchdog) }

// feedWatchdog is the policy loop's watchdog case; nil-safe for tests.
func (o *ops) feedWatchdog() {
	if o != nil {
		o.notify.feed()
	}
}

// watchdogC is the policy loop's watchdog tick channel (nil: no watchdog).
func (o *ops) watchdogC() (<-chan time.Time, func()) {
	if o == nil {
		return nil, func() {}
	}
	return o.notify.watchdogTicker()
}

// sawHealth records the checker's last verdict for status and hooks.
func (o *ops) sawHealth(h *pb.Health) {
	if o != nil {
		o.lastHealth = h
	}
}

// stopping tells systemd the supervisor is shutting down.
func (o *ops) stopping() {
	if o != nil {
		o.notify.send("STOPPING=1\nSTATUS=stopping: VIP released, stopping plugins")
	}
}

// tellSystemd sends READY=1 once every plugin this member wants is up (the
// elector only once the checks pass and no maintenance holds it out), and
// a STATUS= line whenever the summary changes.
func (o *ops) tellSystemd(p *policy) {
	if !o.ready && !p.shutting {
		// A plugin that cannot start counts as settled: READY=1 then
		// comes with a Status= line saying why this member is unhealthy,
		// instead of a start that times out.
		settled := func(kind string) bool { return p.impls[kind] != nil || p.faults.startErr[kind] != "" }
		up := settled(rpc.KindChecker) && settled(rpc.KindAnnouncer) && settled(rpc.KindBalancer)
		electorSettled := settled(rpc.KindElector) || o.maintenance.On || o.sickness(p) != ""
		if up && electorSettled {
			o.ready = true
			o.notify.send(daemon.SdNotifyReady)
			p.log.Info().Dur("took_ms", time.Since(o.started)).Msg("ready")
		}
	}
	line := o.summary(p)
	if line != o.statusLine {
		o.statusLine = line
		o.notify.send("STATUS=" + line)
	}
}

// summary is the one-line state `systemctl status` shows.
func (o *ops) summary(p *policy) string {
	switch {
	case p.shutting:
		return "stopping"
	case !o.ready:
		return "starting plugins"
	case o.maintenance.On:
		return "maintenance: VIP given up, out of the election"
	}
	if why := o.sickness(p); why != "" {
		return "unhealthy (" + why + "): out of the election"
	}
	l := p.leadership
	switch {
	case p.held:
		return fmt.Sprintf("leader, holding VIP %s (term %d)", p.s.cfg.VIP, l.GetTerm())
	case l == nil || p.impls[rpc.KindElector] == nil:
		return "joining the election"
	case l.LeaderId != "":
		return fmt.Sprintf("%s; leader %s holds VIP %s (term %d)", roleName(l.Role), l.LeaderId, p.s.cfg.VIP, l.Term)
	}
	return fmt.Sprintf("%s; no leader (term %d)", roleName(l.Role), l.Term)
}

package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/proxyheader"
	"github.com/keep-vip/keep-vip/rpc/limits"
)

// BackendState is what is known of a backend at run time. A reload that
// keeps the backend keeps its state.
type BackendState struct {
	// Up is the hot path's view: no new connections while false.
	Up atomic.Bool
	// Active counts connections (udp sessions, http requests) it serves.
	Active atomic.Int64
	// connErrs counts consecutive connect errors, for passive ejection.
	connErrs atomic.Int32

	mu sync.Mutex
	// checkDown: the active checks failed fall times in a row.
	checkDown bool
	// ejected: connect errors took it out at ejectedAt.
	ejected   bool
	ejectedAt time.Time
	// Consecutive active check results.
	okStreak, failStreak int
}

func newBackendState() *BackendState {
	st := &BackendState{}
	st.Up.Store(true)
	return st
}

// available says whether be may get a new connection. A backend ejected by
// connect errors, with no active check to bring it back, is let in again
// once the cool-down has passed.
func (j *Judge) available(be *Backend) bool {
	if be.State.Up.Load() {
		return true
	}
	if be.lb.health.typ != "" {
		return false
	}
	st := be.State
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ejected && time.Since(st.ejectedAt) >= j.EjectCooldown {
		// On trial: one more connect error ejects it again, one success
		// clears the count.
		st.ejected = false
		st.connErrs.Store(int32(be.lb.health.ejectAfter - 1))
		j.refresh(be, "cool-down after ejection over")
	}
	return st.Up.Load()
}

// refresh recomputes up from the state, under st.mu, and logs a change.
func (j *Judge) refresh(be *Backend, why string) {
	st := be.State
	up := !st.checkDown && !st.ejected
	if st.Up.Swap(up) == up {
		return
	}
	be.Metrics.up.Set(b2f(up))
	ev := j.Log.Info()
	msg := "backend up"
	if !up {
		ev = j.Log.Warn()
		msg = "backend down"
	}
	ev.Str("balancer", be.lb.Name).Str("backend", be.Name).Str("address", be.Address).Str("reason", why).Msg(msg)
}

// ConnectOK resets the passive error count; it costs one atomic load when
// there is nothing to reset.
func (j *Judge) ConnectOK(be *Backend) {
	if be.State.connErrs.Load() != 0 {
		be.State.connErrs.Store(0)
	}
}

// ConnectFailed counts a failed connect and ejects the backend after
// ejectAfter of them in a row. A fault of the balancer's own is not the
// backend's: it is only noted, and local says so, for the caller to give
// up rather than try the next backend.
func (j *Judge) ConnectFailed(be *Backend, err error) (local bool) {
	if j.NoteLocal(be.lb.Name, OpConnect, err) {
		return true
	}
	be.Metrics.dialErrors.Inc()
	n := be.State.connErrs.Add(1)
	limit := be.lb.health.ejectAfter
	if limit <= 0 || int(n) < limit {
		return false
	}
	st := be.State
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ejected {
		return false
	}
	st.ejected, st.ejectedAt, st.okStreak = true, time.Now(), 0
	be.Metrics.ejections.Inc()
	j.refresh(be, fmt.Sprintf("ejected after %d connect errors in a row: %v", n, err))
	return false
}

// checked applies one active check result with rise and fall. A success
// streak of rise also re-admits a backend ejected by connect errors.
func (j *Judge) checked(be *Backend, err error) {
	if err != nil && j.NoteLocal(be.lb.Name, OpCheck, err) {
		// The check could not run: it says nothing either way.
		return
	}
	st := be.State
	st.mu.Lock()
	defer st.mu.Unlock()
	if err == nil {
		st.failStreak = 0
		st.okStreak++
		if (st.checkDown || st.ejected) && st.okStreak >= be.lb.health.rise {
			st.checkDown, st.ejected = false, false
			st.connErrs.Store(0)
			j.refresh(be, fmt.Sprintf("%d %s checks passed", st.okStreak, be.lb.health.typ))
		}
		return
	}
	st.okStreak = 0
	st.failStreak++
	if !st.checkDown && st.failStreak >= be.lb.health.fall {
		st.checkDown = true
		j.refresh(be, fmt.Sprintf("%d %s checks failed, last: %v", st.failStreak, be.lb.health.typ, err))
	}
}

// StopHealth ends lb's active checks and waits for them; lb must have been
// started (StartHealth).
func (lb *LoadBalancer) StopHealth() { lb.stopHealth() }

// StartHealth runs lb's active checks, one loop per backend, until
// lb.StopHealth. Without active checks it only clears a check verdict an
// earlier config left.
func (j *Judge) StartHealth(lb *LoadBalancer) {
	for _, be := range lb.Backends {
		be.Metrics.up.Set(b2f(be.State.Up.Load()))
	}
	if lb.health.typ == "" {
		for _, be := range lb.Backends {
			be.State.mu.Lock()
			be.State.checkDown, be.State.okStreak, be.State.failStreak = false, 0, 0
			j.refresh(be, "active checks turned off")
			be.State.mu.Unlock()
		}
		lb.stopHealth = func() {}
		return
	}
	ctx, cancel := context.WithCancel(j.ctx)
	var wg sync.WaitGroup
	probe := j.tcpProbe
	if lb.health.typ == limits.HealthHTTP {
		probe = j.httpProbe(lb)
	}
	for _, be := range lb.Backends {
		wg.Go(func() {
			// Spread the first checks so a reload does not probe every
			// backend at the same instant.
			first := time.Duration(rand.Int64N(int64(lb.health.interval)/4 + 1))
			t := time.NewTimer(first)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				cctx, ccancel := context.WithTimeout(ctx, lb.health.timeout)
				err := probe(cctx, be)
				ccancel()
				if ctx.Err() != nil {
					return
				}
				j.checked(be, err)
				t.Reset(lb.health.interval)
			}
		})
	}
	lb.stopHealth = func() { cancel(); wg.Wait() }
}

// tcpProbe connects and closes. With the PROXY protocol on it sends a LOCAL
// header first, as a backend that expects one may log a bare connection.
func (j *Judge) tcpProbe(ctx context.Context, be *Backend) error {
	var d net.Dialer
	c, err := d.DialTCP(ctx, "tcp", netip.AddrPort{}, be.AddrPort)
	if err != nil {
		return err
	}
	defer c.Close()
	if v := be.lb.ProxyProtocol; v > 0 {
		c.SetWriteDeadline(time.Now().Add(be.lb.health.timeout))
		return proxyheader.WriteLocal(c, v)
	}
	return nil
}

// httpProbe returns a probe that asks for lb's health path on a fresh
// connection each time and wants a 2xx or 3xx answer.
func (j *Judge) httpProbe(lb *LoadBalancer) func(ctx context.Context, be *Backend) error {
	tr := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil || lb.ProxyProtocol == 0 {
				return c, err
			}
			if err := proxyheader.WriteLocal(c, lb.ProxyProtocol); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, be *Backend) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+be.Address+lb.health.path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "keep-vip-balancer health check")
		resp, err := client.Do(req)
		if err != nil {
			var ue interface{ Unwrap() error }
			if errors.As(err, &ue) {
				err = ue.Unwrap()
			}
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s answered %s", lb.health.path, resp.Status)
		}
		return nil
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

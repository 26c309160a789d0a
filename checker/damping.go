package checker

// damper is one check's flap damping. A check that is healthy turns
// unhealthy after fall consecutive failed runs, and one that is unhealthy
// turns healthy after rise consecutive passed runs; a run that agrees with
// the current state resets the count.
//
// The first run sets the state at once: there is no history to damp yet,
// and a checker that was restarted (its last verdict only stands for a few
// intervals in the supervisor) must not hold a healthy member out of the
// election for rise intervals. A failing first run is unhealthy at once for
// the same reason a failing check is: nothing has shown the member can serve.
type damper struct {
	rise, fall int
	known      bool // false until the first run
	healthy    bool
	// streak counts the consecutive runs that disagreed with healthy.
	streak int
}

// observe records one run and reports whether the state changed (the first
// run always does).
func (d *damper) observe(passed bool) bool {
	if !d.known {
		d.known, d.healthy, d.streak = true, passed, 0
		return true
	}
	if passed == d.healthy {
		d.streak = 0
		return false
	}
	d.streak++
	if d.streak < d.need() {
		return false
	}
	d.healthy, d.streak = passed, 0
	return true
}

// need is how many disagreeing runs in a row change the current state.
func (d *damper) need() int {
	n := d.fall
	if !d.healthy {
		n = d.rise
	}
	return max(n, 1)
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// benchAptInstall installs Debian packages for a benchmark's peers, as
// `make bench` promises to set up what it compares against: with apt-get,
// as root, recommends left out (name every package needed). It fails
// without root or apt-get, or when apt-get does.
func benchAptInstall(pkgs ...string) error {
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return fmt.Errorf("no apt-get here: install %s by hand", strings.Join(pkgs, " "))
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root: install %s by hand (apt-get install %[1]s)", strings.Join(pkgs, " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)} {
		cmd := exec.CommandContext(ctx, apt, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", args[0], err, tail(string(out), 2000))
		}
	}
	return nil
}

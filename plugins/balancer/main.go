// Command keep-vip-balancer is the built-in balancer plugin.
package main

import (
	"runtime"

	"github.com/keep-vip/keep-vip/balancer"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() {
	b := balancer.New(rpc.Log)
	// An event loop per processor Go was given (GOMAXPROCS), and one
	// processor more for everything else (gRPC, health checks, timers).
	// A loop waits in epoll_wait as a syscall; with no idle processor
	// the runtime hands the waiting loop's to another thread after 20µs,
	// two thread wakeups per longer wait.
	loops := runtime.GOMAXPROCS(0)
	b.SetLoops(loops)
	runtime.GOMAXPROCS(loops + 1)
	rpc.ServeBalancer(b)
}

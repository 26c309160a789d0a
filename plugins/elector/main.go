// Command elector is keep-vip's elector plugin: one member's Raft node,
// served to the supervisor over go-plugin.
package main

import (
	"github.com/keep-vip/keep-vip/elector"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() {
	if rpc.IsOffline() {
		rpc.ServeElectorOffline(elector.Offline)
	}
	rpc.ServeElector(elector.New(rpc.Log))
}

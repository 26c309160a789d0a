// Command keep-vip-balancer is the built-in balancer plugin.
package main

import (
	"github.com/keep-vip/keep-vip/balancer"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() { rpc.ServeBalancer(balancer.New(rpc.Log)) }

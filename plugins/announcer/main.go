// Command announcer is keep-vip's announcer plugin: it puts the VIPs on the
// interface and announces them with gratuitous ARP, on the supervisor's
// behalf.
package main

import (
	"github.com/keep-vip/keep-vip/announcer"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() { rpc.ServeAnnouncer(announcer.New(rpc.Log)) }

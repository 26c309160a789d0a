// Command announcer is keep-vip's announcer plugin: it puts the VIPs on the
// interface, announces them (gratuitous ARP for IPv4, unsolicited neighbour
// advertisements for IPv6) and watches the interface, on the supervisor's
// behalf.
package main

import (
	"github.com/keep-vip/keep-vip/announcer"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() { rpc.ServeAnnouncer(announcer.New(rpc.Log)) }

// Command keep-vip-checker is the built-in checker plugin.
package main

import (
	"github.com/keep-vip/keep-vip/checker"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() { rpc.ServeChecker(checker.New(rpc.Log)) }

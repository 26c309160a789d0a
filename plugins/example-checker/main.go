// Command example-checker is an example third-party checker plugin: it is
// built against keep-vip's plugin SDK alone and checks that files exist.
package main

import (
	"github.com/keep-vip/keep-vip/plugins/example-checker/filecheck"
	"github.com/keep-vip/keep-vip/rpc"
)

func main() { rpc.ServeChecker(filecheck.New()) }

// Package e2e is keep-vip's multi-node end-to-end suite. Its tests (in the
// _test.go files) start real supervisors with their four plugins in network
// namespaces joined by a bridge that lives in a namespace of its own, and
// check what a client and an operator would see: one VIP holder at a time,
// a load balancer that answers through the VIP, and failover when a leader
// dies, loses a plugin or fails its health check.
//
// Run as root (the tests skip otherwise):
//
//	go test -count=1 -v ./e2e/...
//
// KEEPVIP_BIN_DIR=DIR uses prebuilt keep-vip-supervisor and keep-vip-{checker,
// announcer,balancer,elector} from DIR instead of building them once per run.
//
// The harness, one type per concern:
//   - Binaries (binaries_test.go): where the five binaries are.
//   - Net (net_test.go): namespaces kv<suffix>{br,n1..nN,cl}, 198.18.X.0/24.
//   - Node (node_test.go): config, supervisor process, backend and health
//     endpoint (ServerProcess, helper_test.go) of one member.
//   - Sampler (sampler_test.go): the split-brain guard, every 5ms.
//   - Client and Prober (client_test.go): asks through VIP:8080 from the
//     client namespace and measures the client-visible outage.
//   - Cluster (cluster_test.go): all of the above for one test.
//
// The test binary is its own helper program (KEEPVIP_E2E_HELPER, see
// helper_test.go). Namespaces and processes go with t.Cleanup; those of a
// run killed before its cleanups are removed by the next run (TestMain).
package e2e

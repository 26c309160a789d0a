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
//   - Operations (ops_test.go): `keep-vip-supervisor status` and
//     `maintenance` against a cluster, event hooks, journald fields and
//     sd_notify on sockets of the test's, and a member run as the packaged
//     unit runs it (unprivileged, three capabilities).
//   - Partitioner (partition_test.go): nftables drop rules inside the node
//     namespaces between chosen nodes; the original five partition
//     experiments and the 5-member runs.
//   - The nemesis (nemesis_test.go): a seeded random fault run
//     (KEEPVIP_NEMESIS_SEED, KEEPVIP_NEMESIS_DURATION, KEEPVIP_NEMESIS_NODES).
//   - FastProber (probe_fast_test.go): a connection every 10ms from the
//     client namespace without waiting for earlier ones, for the failover
//     benchmark (bench_failover_test.go, `make bench`, against keepalived).
//
// KEEPVIP_E2E_KEEP_LOGS=DIR copies the node logs of the partition, nemesis,
// failover and benchmark tests into DIR, to read timings afterwards.
//
// The test binary is its own helper program (KEEPVIP_E2E_HELPER, see
// helper_test.go). Namespaces and processes go with t.Cleanup; those of a
// run killed before its cleanups are removed by the next run (TestMain).
package e2e

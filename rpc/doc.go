// Package rpc is keep-vip's plugin SDK: the Go interfaces of the four plugin
// kinds, their gRPC client and server adapters, the go-plugin types that join
// them, and the Serve calls a plugin's main is made of.
//
// A third-party checker imports this package alone; its whole main is
//
//	func main() { rpc.ServeChecker(mychecker.New()) }
//
// # Module and version
//
// This is the module github.com/keep-vip/keep-vip/rpc, kept apart from
// keep-vip's own module so that a plugin requires only what the contract
// needs: gRPC, protobuf, go-plugin (with hclog), Prometheus' client
// libraries and zerolog for Log. Its releases are tagged rpc/v1.x.y in
// keep-vip's repository; SDKVersion is the one this copy is.
//
// Compatibility, for the whole of major version 1:
//   - The wire contract is the protobuf package keepvip.v1
//     (keepvip/v1/keepvip.proto) and go-plugin protocol version 1
//     (ProtocolVersion). Fields, messages, enum values and RPCs are only
//     ever added; none is renamed, renumbered or given another meaning. A
//     plugin built against an older 1.x SDK keeps working with a newer
//     supervisor: an RPC it lacks answers UNIMPLEMENTED, which the
//     supervisor handles (Validate: ErrNoValidate), and a field it does not
//     set reads as its zero value.
//   - The Go API of this package is only added to. A method added to one
//     of the plugin interfaces is optional and found by a type assertion
//     (Validator, Close), so an implementation written against an older
//     1.x SDK still compiles.
//   - A breaking change is keepvip.v2, a new ProtocolVersion and the module
//     path github.com/keep-vip/keep-vip/rpc/v2: the go-plugin handshake
//     refuses a plugin of another major version instead of misreading it.
//
// The subpackages limits (defaults and bounds both sides apply) and raftls
// (the Raft transport's TLS files) belong to the contract too.
package rpc

// SDKVersion is this SDK's version; the major number is ProtocolVersion.
const SDKVersion = "v1.1.0"

package rpc

import (
	"strings"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// RoleName is a role as every log line, status and hook spells it:
// follower, candidate, leader, shutdown. The same word everywhere is what
// makes `journalctl ROLE=leader` find the supervisor's and the elector's
// lines alike.
func RoleName(r pb.Role) string {
	if r == pb.Role_ROLE_UNSPECIFIED {
		return "unknown"
	}
	if name, ok := pb.Role_name[int32(r)]; ok {
		return strings.ToLower(strings.TrimPrefix(name, "ROLE_"))
	}
	return "unknown"
}

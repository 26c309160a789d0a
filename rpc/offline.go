package rpc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// OfflineArg is the argument that makes the elector binary answer one
// ElectorOfflineRequest instead of serving go-plugin.
const OfflineArg = "offline"

// ElectorOffline answers the elector's offline requests (on a stopped
// member's data dir).
type ElectorOffline func(*pb.ElectorOfflineRequest) (*pb.ElectorOfflineReply, error)

// IsOffline reports whether the process was started for one offline
// request rather than as a plugin.
func IsOffline() bool { return len(os.Args) == 2 && os.Args[1] == OfflineArg }

// ServeElectorOffline reads one request on stdin, answers it on stdout and
// exits: 0 with the reply, 1 with a one-line error on stderr.
func ServeElectorOffline(answer ElectorOffline) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(fmt.Errorf("read request: %w", err))
	}
	req := &pb.ElectorOfflineRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		fail(fmt.Errorf("decode request: %w", err))
	}
	reply, err := answer(req)
	if err != nil {
		fail(err)
	}
	out, err := proto.Marshal(reply)
	if err != nil {
		fail(fmt.Errorf("encode reply: %w", err))
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fail(fmt.Errorf("write reply: %w", err))
	}
	os.Exit(0)
}

// CallElectorOffline runs the elector binary at path for one offline
// request.
func CallElectorOffline(ctx context.Context, path string, req *pb.ElectorOfflineRequest) (*pb.ElectorOfflineReply, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, OfflineArg)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%s %s: %s", path, OfflineArg, msg)
		}
		return nil, fmt.Errorf("%s %s: %w", path, OfflineArg, err)
	}
	reply := &pb.ElectorOfflineReply{}
	if err := proto.Unmarshal(stdout.Bytes(), reply); err != nil {
		return nil, fmt.Errorf("%s %s: decode reply: %w", path, OfflineArg, err)
	}
	return reply, nil
}

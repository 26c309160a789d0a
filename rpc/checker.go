package rpc

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Checker runs this member's health checks. It is the plugin users may
// replace with their own binary (config key plugins.checker); the protocol,
// and what each message means, is docs/checker-protocol.md.
type Checker interface {
	Reporter
	Configure(ctx context.Context, cfg *pb.CheckerConfig) error
	// Watch calls send with the latest verdict at once, if there is one,
	// and then a verdict after every round of checks, until ctx ends or
	// send fails. Healthy means every required check is healthy.
	Watch(ctx context.Context, send func(*pb.Health) error) error
}

// CheckerPlugin joins a Checker to go-plugin.
type CheckerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Checker
}

func (p *CheckerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterCheckerServer(s, &checkerServer{reporterServer: reporterServer{p.Impl}, impl: p.Impl})
	return nil
}

func (p *CheckerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	cl := pb.NewCheckerClient(c)
	return &checkerClient{reporterClient: reporterClient{cl}, validatorClient: validatorClient[*pb.CheckerConfig]{KindChecker, cl.Validate}, c: cl}, nil
}

type unimplementedChecker struct{ pb.UnimplementedCheckerServer }

type checkerServer struct {
	reporterServer
	unimplementedChecker
	impl Checker
}

func (s *checkerServer) Validate(ctx context.Context, cfg *pb.CheckerConfig) (*pb.Empty, error) {
	return validateOn(ctx, s.impl, cfg)
}

func (s *checkerServer) Configure(ctx context.Context, cfg *pb.CheckerConfig) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.Configure(ctx, cfg)
}

func (s *checkerServer) Watch(_ *pb.Empty, st pb.Checker_WatchServer) error {
	return s.impl.Watch(st.Context(), st.Send)
}

type checkerClient struct {
	reporterClient
	validatorClient[*pb.CheckerConfig]
	c pb.CheckerClient
}

func (c *checkerClient) Configure(ctx context.Context, cfg *pb.CheckerConfig) error {
	_, err := c.c.Configure(ctx, cfg)
	return err
}

func (c *checkerClient) Watch(ctx context.Context, send func(*pb.Health) error) error {
	st, err := c.c.Watch(ctx, &pb.Empty{})
	if err != nil {
		return err
	}
	return recvAll(st.Recv, send)
}

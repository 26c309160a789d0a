package rpc

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Balancer runs the configured load balancers.
type Balancer interface {
	Reporter
	// Configure replaces the running set of load balancers.
	Configure(ctx context.Context, cfg *pb.BalancerConfig) error
}

// BalancerPlugin joins a Balancer to go-plugin.
type BalancerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Balancer
}

func (p *BalancerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterBalancerServer(s, &balancerServer{reporterServer: reporterServer{p.Impl}, impl: p.Impl})
	return nil
}

func (p *BalancerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	cl := pb.NewBalancerClient(c)
	return &balancerClient{reporterClient: reporterClient{cl}, c: cl}, nil
}

type unimplementedBalancer struct{ pb.UnimplementedBalancerServer }

type balancerServer struct {
	reporterServer
	unimplementedBalancer
	impl Balancer
}

func (s *balancerServer) Validate(ctx context.Context, cfg *pb.BalancerConfig) (*pb.Empty, error) {
	return validateOn(ctx, s.impl, cfg)
}

func (s *balancerServer) Configure(ctx context.Context, cfg *pb.BalancerConfig) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.Configure(ctx, cfg)
}

type balancerClient struct {
	reporterClient
	c pb.BalancerClient
}

// Validate asks the plugin to check cfg without applying it; ErrNoValidate
// when the plugin binary predates the RPC.
func (c *balancerClient) Validate(ctx context.Context, cfg *pb.BalancerConfig) error {
	_, err := c.c.Validate(ctx, cfg)
	return validateResult(err)
}

// ValidateConfig is Validate for a BalancerConfig.
func (c *balancerClient) ValidateConfig(ctx context.Context, cfg proto.Message) error {
	m, ok := cfg.(*pb.BalancerConfig)
	if !ok {
		return wrongConfig(KindBalancer, cfg)
	}
	return c.Validate(ctx, m)
}

func (c *balancerClient) Configure(ctx context.Context, cfg *pb.BalancerConfig) error {
	_, err := c.c.Configure(ctx, cfg)
	return err
}

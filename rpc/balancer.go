package rpc

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

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
	return &balancerClient{reporterClient: reporterClient{cl}, validatorClient: validatorClient[*pb.BalancerConfig]{KindBalancer, cl.Validate}, c: cl}, nil
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
	validatorClient[*pb.BalancerConfig]
	c pb.BalancerClient
}

func (c *balancerClient) Configure(ctx context.Context, cfg *pb.BalancerConfig) error {
	_, err := c.c.Configure(ctx, cfg)
	return err
}

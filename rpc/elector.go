package rpc

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Elector runs this member's Raft node and reports its leadership.
type Elector interface {
	Reporter
	Configure(ctx context.Context, cfg *pb.ElectorConfig) error
	// Watch calls send with the current leadership and then with every
	// change, until ctx ends or send fails.
	Watch(ctx context.Context, send func(*pb.Leadership) error) error
	// TransferLeadership hands leadership to target, or to the voter Raft
	// picks when target is empty. A member that does not lead has nothing to
	// hand over and returns nil.
	TransferLeadership(ctx context.Context, target string) error
}

// ElectorPlugin joins an Elector to go-plugin.
type ElectorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Elector
}

func (p *ElectorPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterElectorServer(s, &electorServer{reporterServer: reporterServer{p.Impl}, impl: p.Impl})
	return nil
}

func (p *ElectorPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	cl := pb.NewElectorClient(c)
	return &electorClient{reporterClient: reporterClient{cl}, validatorClient: validatorClient[*pb.ElectorConfig]{KindElector, cl.Validate}, c: cl}, nil
}

type unimplementedElector struct{ pb.UnimplementedElectorServer }

type electorServer struct {
	reporterServer
	unimplementedElector
	impl Elector
}

func (s *electorServer) Validate(ctx context.Context, cfg *pb.ElectorConfig) (*pb.Empty, error) {
	return validateOn(ctx, s.impl, cfg)
}

func (s *electorServer) Configure(ctx context.Context, cfg *pb.ElectorConfig) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.Configure(ctx, cfg)
}

func (s *electorServer) Watch(_ *pb.Empty, st pb.Elector_WatchServer) error {
	return s.impl.Watch(st.Context(), st.Send)
}

func (s *electorServer) TransferLeadership(ctx context.Context, req *pb.TransferRequest) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.TransferLeadership(ctx, req.GetTargetId())
}

type electorClient struct {
	reporterClient
	validatorClient[*pb.ElectorConfig]
	c pb.ElectorClient
}

func (c *electorClient) Configure(ctx context.Context, cfg *pb.ElectorConfig) error {
	_, err := c.c.Configure(ctx, cfg)
	return err
}

func (c *electorClient) Watch(ctx context.Context, send func(*pb.Leadership) error) error {
	st, err := c.c.Watch(ctx, &pb.Empty{})
	if err != nil {
		return err
	}
	return recvAll(st.Recv, send)
}

func (c *electorClient) TransferLeadership(ctx context.Context, target string) error {
	_, err := c.c.TransferLeadership(ctx, &pb.TransferRequest{TargetId: target})
	return err
}

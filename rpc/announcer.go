package rpc

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Announcer puts the VIPs on the interface and tells the network about them.
type Announcer interface {
	Reporter
	// Configure sets the interface and VIPs, and removes any VIP an earlier
	// run left behind: a fresh announcer holds nothing.
	Configure(ctx context.Context, cfg *pb.AnnouncerConfig) error
	// Acquire holds the VIPs for req's Raft term: a later Acquire with
	// another term while held only updates what the routes carry.
	Acquire(ctx context.Context, req *pb.AcquireRequest) error
	Release(ctx context.Context) error
	// Watch calls send with the interface's state at once and on every
	// change, until ctx ends or send fails.
	Watch(ctx context.Context, send func(*pb.InterfaceEvent) error) error
}

// AnnouncerPlugin joins an Announcer to go-plugin.
type AnnouncerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Announcer
}

func (p *AnnouncerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterAnnouncerServer(s, &announcerServer{reporterServer: reporterServer{p.Impl}, impl: p.Impl})
	return nil
}

func (p *AnnouncerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	cl := pb.NewAnnouncerClient(c)
	return &announcerClient{reporterClient: reporterClient{cl}, validatorClient: validatorClient[*pb.AnnouncerConfig]{KindAnnouncer, cl.Validate}, c: cl}, nil
}

type unimplementedAnnouncer struct {
	pb.UnimplementedAnnouncerServer
}

type announcerServer struct {
	reporterServer
	unimplementedAnnouncer
	impl Announcer
}

func (s *announcerServer) Validate(ctx context.Context, cfg *pb.AnnouncerConfig) (*pb.Empty, error) {
	return validateOn(ctx, s.impl, cfg)
}

func (s *announcerServer) Configure(ctx context.Context, cfg *pb.AnnouncerConfig) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.Configure(ctx, cfg)
}

func (s *announcerServer) Acquire(ctx context.Context, req *pb.AcquireRequest) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.Acquire(ctx, req)
}

func (s *announcerServer) Release(ctx context.Context, _ *pb.Empty) (*pb.Empty, error) {
	return &pb.Empty{}, s.impl.Release(ctx)
}

func (s *announcerServer) Watch(_ *pb.Empty, st pb.Announcer_WatchServer) error {
	return s.impl.Watch(st.Context(), st.Send)
}

type announcerClient struct {
	reporterClient
	validatorClient[*pb.AnnouncerConfig]
	c pb.AnnouncerClient
}

func (c *announcerClient) Configure(ctx context.Context, cfg *pb.AnnouncerConfig) error {
	_, err := c.c.Configure(ctx, cfg)
	return err
}

func (c *announcerClient) Acquire(ctx context.Context, req *pb.AcquireRequest) error {
	_, err := c.c.Acquire(ctx, req)
	return err
}

func (c *announcerClient) Release(ctx context.Context) error {
	_, err := c.c.Release(ctx, &pb.Empty{})
	return err
}

func (c *announcerClient) Watch(ctx context.Context, send func(*pb.InterfaceEvent) error) error {
	st, err := c.c.Watch(ctx, &pb.Empty{})
	if err != nil {
		return err
	}
	return recvAll(st.Recv, send)
}

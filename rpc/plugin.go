package rpc

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-plugin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/sched"
)

// ProtocolVersion is the major version of the plugin protocol (keepvip.v1).
// The go-plugin handshake refuses a plugin that speaks another.
const ProtocolVersion = 1

// Handshake is shared by the supervisor and every plugin. The cookie only
// keeps a plugin binary from being run by hand by mistake; it is no security.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "KEEP_VIP_PLUGIN",
	MagicCookieValue: "b7c1f0a2-keep-vip-plugin",
}

// The plugin kinds, as named in the go-plugin plugin map.
const (
	KindElector   = "elector"
	KindAnnouncer = "announcer"
	KindChecker   = "checker"
	KindBalancer  = "balancer"
)

// Kinds lists every plugin kind in the order the supervisor starts them.
var Kinds = []string{KindChecker, KindAnnouncer, KindBalancer, KindElector}

// PluginMap is the plugin set a supervisor dispenses from.
var PluginMap = plugin.PluginSet{
	KindElector:   &ElectorPlugin{},
	KindAnnouncer: &AnnouncerPlugin{},
	KindChecker:   &CheckerPlugin{},
	KindBalancer:  &BalancerPlugin{},
}

// Reporter is what every plugin answers besides its own calls: a status for
// humans and its Prometheus metric families.
type Reporter interface {
	Status(ctx context.Context) (*pb.PluginStatus, error)
	prometheus.Gatherer
}

// serve runs one plugin until the supervisor stops it or it gets SIGTERM
// (the Pdeathsig the supervisor sets, so it also fires when the supervisor
// dies). Either way impl's Close, if it has one, runs before the exit, which
// is how the announcer takes its VIP away on its way out.
func serve(kind string, p plugin.Plugin, impl any) {
	ApplyFootprint(kind)
	// The supervisor sets the elector and the announcer realtime once they
	// are configured (sched.SetProcess); a spinning one falls back to nice
	// -10.
	sched.WatchRTTime(func(err error) { LogRTFallBack(Log, err) })
	closeImpl := func() {
		if c, ok := impl.(interface{ Close() error }); ok {
			if err := c.Close(); err != nil {
				Log.Error().Err(err).Msg("close on exit")
			}
		}
	}
	// When the supervisor dies, the pipe behind our stderr has no reader:
	// by default Go would die of SIGPIPE at the first log line, before Close
	// could take the VIP away. Ignored, the write just fails.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		closeImpl() // first: the log line below may go nowhere
		Log.Info().Str("signal", sig.String()).Msg("stopped")
		os.Exit(0)
	}()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{kind: p},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          HCLog(Log, kind),
	})
	closeImpl()
}

// ServeElector serves impl as the elector plugin.
func ServeElector(impl Elector) { serve(KindElector, &ElectorPlugin{Impl: impl}, impl) }

// ServeAnnouncer serves impl as the announcer plugin.
func ServeAnnouncer(impl Announcer) { serve(KindAnnouncer, &AnnouncerPlugin{Impl: impl}, impl) }

// ServeChecker serves impl as the checker plugin.
func ServeChecker(impl Checker) { serve(KindChecker, &CheckerPlugin{Impl: impl}, impl) }

// ServeBalancer serves impl as the balancer plugin.
func ServeBalancer(impl Balancer) { serve(KindBalancer, &BalancerPlugin{Impl: impl}, impl) }

// reporterServer answers Status and Metrics for every service. Each server
// adapter embeds it above its Unimplemented base, so these methods win.
type reporterServer struct{ impl Reporter }

func (s reporterServer) Status(ctx context.Context, _ *pb.Empty) (*pb.PluginStatus, error) {
	return s.impl.Status(ctx)
}

func (s reporterServer) Metrics(context.Context, *pb.Empty) (*pb.PluginMetrics, error) {
	fams, err := s.impl.Gather()
	if err != nil {
		return nil, err
	}
	out := &pb.PluginMetrics{Families: make([][]byte, 0, len(fams))}
	for _, f := range fams {
		b, err := proto.Marshal(f)
		if err != nil {
			return nil, err
		}
		out.Families = append(out.Families, b)
	}
	return out, nil
}

// reportingClient is the part every generated client shares.
type reportingClient interface {
	Status(ctx context.Context, in *pb.Empty, opts ...grpc.CallOption) (*pb.PluginStatus, error)
	Metrics(ctx context.Context, in *pb.Empty, opts ...grpc.CallOption) (*pb.PluginMetrics, error)
}

// reporterClient implements Reporter over any generated client.
type reporterClient struct{ rc reportingClient }

func (c reporterClient) Status(ctx context.Context) (*pb.PluginStatus, error) {
	return c.rc.Status(ctx, &pb.Empty{})
}

// Gather fetches the plugin's metrics; it is bounded because a scrape must
// not hang on a stuck plugin.
func (c reporterClient) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), GatherTimeout)
	defer cancel()
	m, err := c.rc.Metrics(ctx, &pb.Empty{})
	if err != nil {
		return nil, err
	}
	fams := make([]*dto.MetricFamily, 0, len(m.Families))
	for _, b := range m.Families {
		f := &dto.MetricFamily{}
		if err := proto.Unmarshal(b, f); err != nil {
			return nil, err
		}
		fams = append(fams, f)
	}
	return fams, nil
}

// recvAll feeds every message of a server stream to send until either fails.
// A stream that the server ends is reported as an error too: a watch never
// ends on its own while the plugin lives.
func recvAll[T any](recv func() (T, error), send func(T) error) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return ErrStreamEnded
		}
		if err != nil {
			return err
		}
		if err := send(m); err != nil {
			return err
		}
	}
}

// ErrStreamEnded is returned by a client Watch whose stream the plugin closed.
var ErrStreamEnded = errors.New("plugin ended its stream")

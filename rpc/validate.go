package rpc

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Validator is what a plugin implements to answer the Validate RPC of its
// service: check cfg exactly as Configure would, without applying it or
// touching anything outside the process (no interface, socket, file or
// store). The error is one line naming the key and value at fault. A
// plugin without it answers UNIMPLEMENTED, and the supervisor says so.
type Validator[C proto.Message] interface {
	Validate(ctx context.Context, cfg C) error
}

// ConfigValidator is what every client of this package offers the
// supervisor: the plugin's Validate for its own config message.
type ConfigValidator interface {
	ValidateConfig(ctx context.Context, cfg proto.Message) error
}

// ErrNoValidate is what a client's Validate returns when the plugin binary
// was built before the Validate RPC existed (it answers UNIMPLEMENTED).
var ErrNoValidate = errors.New("the plugin binary predates the Validate RPC: its section is checked only when it is configured")

// validateOn serves Validate for impl.
func validateOn[C proto.Message](ctx context.Context, impl any, cfg C) (*pb.Empty, error) {
	v, ok := impl.(Validator[C])
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this plugin does not validate configs")
	}
	if err := v.Validate(ctx, cfg); err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.Join(strings.Fields(err.Error()), " "))
	}
	return &pb.Empty{}, nil
}

// validateResult turns a client's Validate answer into an error: nil,
// ErrNoValidate, or the plugin's one line without gRPC's wrapping.
func validateResult(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unimplemented:
			return ErrNoValidate
		case codes.InvalidArgument:
			return errors.New(st.Message())
		}
	}
	return err
}

// wrongConfig is ValidateConfig's answer to a message of another kind.
func wrongConfig(kind string, cfg proto.Message) error {
	return errors.New(kind + " cannot validate a " + string(proto.MessageName(cfg)))
}

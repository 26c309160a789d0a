package rpc

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
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

// validatorClient is the Validate part of every client: C is the kind's
// config message, call the generated client's Validate.
type validatorClient[C proto.Message] struct {
	kind string
	call func(context.Context, C, ...grpc.CallOption) (*pb.Empty, error)
}

// Validate asks the plugin to check cfg without applying it; ErrNoValidate
// when the plugin binary predates the RPC.
func (v validatorClient[C]) Validate(ctx context.Context, cfg C) error {
	_, err := v.call(ctx, cfg)
	return validateResult(err)
}

// ValidateConfig is Validate for the kind's config message (ConfigValidator).
func (v validatorClient[C]) ValidateConfig(ctx context.Context, cfg proto.Message) error {
	m, ok := cfg.(C)
	if !ok {
		return errors.New(v.kind + " cannot validate a " + string(proto.MessageName(cfg)))
	}
	return v.Validate(ctx, m)
}

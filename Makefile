# keep-vip. `make demo` and `make test` set up what they need (as root on
# Debian); see README.md.
SHELL   := /bin/bash
GO      ?= go
export PATH := $(PATH):/usr/local/go/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PLUGINS := elector announcer checker balancer
BIN     := $(CURDIR)/bin

.PHONY: all build deps test unit e2e demo bench generate package clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/keep-vip-supervisor ./supervisor/cmd/keep-vip-supervisor
	@for p in $(PLUGINS); do \
	  echo "$(GO) build -o $(BIN)/keep-vip-$$p ./plugins/$$p"; \
	  $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/keep-vip-$$p ./plugins/$$p || exit 1; \
	done

deps:
	@./scripts/install-deps.sh

# Every test: unit tests and the multi-node e2e suite on the binaries just built.
test: deps build
	$(GO) vet ./...
	KEEPVIP_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 20m ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: deps build
	KEEPVIP_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 20m -v ./e2e/...

# A local 3-node cluster in network namespaces; shows the VIP moving.
demo: deps build
	KEEPVIP_BIN_DIR=$(BIN) KEEPVIP_DEMO=1 $(GO) test -count=1 -timeout 5m -run '^TestDemo$$' -v ./e2e/

# Benchmarks against real peers (keepalived, HAProxy, nginx); they print
# figures and ratios instead of asserting timings.
bench: deps build
	KEEPVIP_BIN_DIR=$(BIN) KEEPVIP_BENCH=1 $(GO) test -count=1 -timeout 80m -run '^TestBench' -v ./e2e/...

# Regenerates rpc/ from the .proto with the generator versions pinned in go.mod.
generate:
	@mkdir -p .bin
	$(GO) build -o .bin/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(CURDIR)/.bin:$$PATH protoc -I rpc \
	  --go_out=rpc --go_opt=paths=source_relative \
	  --go-grpc_out=rpc --go-grpc_opt=paths=source_relative \
	  rpc/keepvip/v1/keepvip.proto

clean:
	rm -rf bin dist .bin

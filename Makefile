# keep-vip. `make demo` and `make test` set up what they need (as root on
# Debian); see README.md.
SHELL   := /bin/bash
GO      ?= go
export PATH := $(PATH):/usr/local/go/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PLUGINS := elector announcer checker balancer
BIN     := $(CURDIR)/bin
# Modules of their own in this tree: the plugin SDK and the example checker
# built against it alone. `go test ./...` at the root does not reach them.
SUBMODULES := rpc plugins/example-checker
DIST    := $(CURDIR)/dist
# Package version: a v1.2.3 tag gives 1.2.3; untagged commits sort below any
# release as 0.0.0~git<date>.<commit>; a dirty tree adds +dirty.
PKG_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo "$${v\#v}" | tr - + || \
  echo "0.0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || echo 0).$$(git rev-parse --short HEAD 2>/dev/null || echo none)")$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty)
ARCH    ?= $(shell $(GO) env GOARCH)

.PHONY: all build deps test unit e2e demo bench generate package clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -buildmode=pie -ldflags '$(LDFLAGS)' -o $(BIN)/keep-vip-supervisor ./supervisor/cmd/keep-vip-supervisor
	@for p in $(PLUGINS); do \
	  echo "$(GO) build -o $(BIN)/keep-vip-$$p ./plugins/$$p"; \
	  CGO_ENABLED=0 $(GO) build -trimpath -buildmode=pie -ldflags '$(LDFLAGS)' -o $(BIN)/keep-vip-$$p ./plugins/$$p || exit 1; \
	done

deps:
	@./scripts/install-deps.sh

# Every test: unit tests, the packages just made (packaging/) and the
# multi-node e2e suite on the binaries just built.
test: deps build package
	$(GO) vet ./...
	@for m in $(SUBMODULES); do echo "cd $$m && $(GO) vet ./..."; (cd $$m && $(GO) vet ./...) || exit 1; done
	@for m in $(SUBMODULES); do echo "cd $$m && $(GO) test ./..."; (cd $$m && $(GO) test -count=1 ./...) || exit 1; done
	KEEPVIP_BIN_DIR=$(BIN) KEEPVIP_DIST_DIR=$(DIST) $(GO) test -count=1 -timeout 20m ./...

unit:
	@for m in $(SUBMODULES); do echo "cd $$m && $(GO) test ./..."; (cd $$m && $(GO) test -count=1 ./...) || exit 1; done
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: deps build
	KEEPVIP_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 20m -v ./e2e/...

# A local 3-node cluster in network namespaces; shows the VIP moving.
demo: deps build
	KEEPVIP_BIN_DIR=$(BIN) KEEPVIP_DEMO=1 $(GO) test -count=1 -timeout 5m -run '^TestDemo$$' -v ./e2e/

# Benchmarks against real peers (keepalived, HAProxy, nginx); they print
# figures and ratios instead of asserting timings. keep-vip runs at the
# product's default priority (realtime), which the e2e suite does not use.
bench: deps build
	KEEP_VIP_PRIORITY=$${KEEP_VIP_PRIORITY:-realtime} KEEPVIP_BIN_DIR=$(BIN) KEEPVIP_BENCH=1 $(GO) test -count=1 -timeout 80m -run '^TestBench' -v ./e2e/...

# Regenerates rpc/ from the .proto with the generator versions pinned in go.mod.
generate:
	@mkdir -p .bin
	$(GO) build -o .bin/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(CURDIR)/.bin:$$PATH protoc -I rpc \
	  --go_out=rpc --go_opt=paths=source_relative \
	  --go-grpc_out=rpc --go-grpc_opt=paths=source_relative \
	  rpc/keepvip/v1/keepvip.proto

# The .deb and .rpm in dist/, by nfpm (pinned as a tool in go.mod). The
# binaries are built without cgo, as position-independent executables that
# need no shared library, so the packages depend on no libc version.
package: build
	@mkdir -p $(DIST)
	@rm -f $(DIST)/keep-vip*.deb $(DIST)/keep-vip*.rpm
	@printf 'keep-vip (%s-1) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- keep-vip maintainers <maintainers@keep-vip.invalid>  %s\n' \
	  '$(PKG_VERSION)' "$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	  "$$(date -R -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s))" | gzip -9n > $(DIST)/changelog.Debian.gz
	PKG_VERSION='$(PKG_VERSION)' ARCH=$(ARCH) $(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t $(DIST)/
	PKG_VERSION='$(PKG_VERSION)' ARCH=$(ARCH) $(GO) tool nfpm package -f packaging/nfpm.yaml -p rpm -t $(DIST)/
	@ls -l $(DIST)/*.deb $(DIST)/*.rpm

clean:
	rm -rf bin dist .bin

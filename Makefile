# weft: see README.md. Every target works from a clean clone on Debian as root.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
PREFIX ?= /opt/cni/bin
CONFDIR ?= /etc/cni/net.d
DESTDIR ?=
CNI_VERSION := v1.3.0
PLUGINS_VERSION := v1.9.0
# flannel's CNI plugin (reads flanneld's subnet file, delegates to bridge +
# host-local) as last shipped in containernetworking/plugins; its successor
# module, flannel-io/cni-plugin, is not served by this machine's module proxy.
FLANNEL_CNI_VERSION := v0.9.1
GOFLAGS_STATIC := CGO_ENABLED=0
LDFLAGS := -s -w
FUZZTIME ?= 3s

.PHONY: all build tools deps install test unit integration fuzz demo demo-down bench clean

all: build

build:
	$(GOFLAGS_STATIC) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/weft ./plugins/weft
	$(GOFLAGS_STATIC) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/weft-ipam ./ipam/weft-ipam
	$(GO) build -o $(BIN)/weft-devetcd ./internal/cmd/weft-devetcd

# cnitool and the reference plugins, pinned, for tests, the demo and benchmarks;
# built as weft is and as upstream releases them: static, no cgo.
tools:
	@test -x $(BIN)/cnitool || $(GOFLAGS_STATIC) GOBIN=$(BIN) $(GO) install -trimpath -ldflags '$(LDFLAGS)' \
		github.com/containernetworking/cni/cnitool@$(CNI_VERSION)
	@mkdir -p $(BIN)/ref
	@test -x $(BIN)/ref/bridge || $(GOFLAGS_STATIC) GOBIN=$(BIN)/ref $(GO) install -trimpath -ldflags '$(LDFLAGS)' \
		github.com/containernetworking/plugins/plugins/main/bridge@$(PLUGINS_VERSION) \
		github.com/containernetworking/plugins/plugins/ipam/host-local@$(PLUGINS_VERSION) \
		github.com/containernetworking/plugins/plugins/meta/portmap@$(PLUGINS_VERSION)
	@test -x $(BIN)/ref/flannel || $(GOFLAGS_STATIC) GOBIN=$(BIN)/ref $(GO) install -trimpath -ldflags '$(LDFLAGS)' \
		github.com/containernetworking/plugins/plugins/meta/flannel@$(FLANNEL_CNI_VERSION)

# System packages a fresh Debian machine lacks (root only; no-op otherwise).
deps:
	@scripts/install-deps.sh

install: build
	install -d $(DESTDIR)$(PREFIX) $(DESTDIR)$(CONFDIR)
	install -m 0755 $(BIN)/weft $(BIN)/weft-ipam $(DESTDIR)$(PREFIX)/
	install -m 0644 conf/10-weft.conflist $(DESTDIR)$(CONFDIR)/

test: deps unit integration fuzz

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

integration: build tools
	@if [ "$$(id -u)" != 0 ]; then \
		if [ -n "$$WEFT_REQUIRE_INTEGRATION" ]; then echo "integration tests need root (WEFT_REQUIRE_INTEGRATION is set)"; exit 1; fi; \
		echo "integration tests need root: skipped"; exit 0; fi; \
	$(GO) test -tags integration -count=1 -timeout 15m ./integration/

# Each fuzz target for FUZZTIME (the seed corpus runs in every `go test`).
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

demo: deps build tools
	scripts/demo.sh

demo-down:
	scripts/demo.sh down

bench: deps build tools
	@scripts/install-deps.sh bench
	scripts/bench/run.sh

clean:
	rm -rf $(BIN)

# Loom's build, test, demo and benchmark entry points. `make demo` and `make test` install
# everything they need on a fresh machine (hack/tools.sh) into $(LOOM_TOOLS), outside the repo.

SHELL := /bin/bash
GO ?= go
LOOM_TOOLS ?= $(HOME)/.cache/loom/tools
export LOOM_TOOLS

TOOLS_ENV := $(shell LOOM_TOOLS=$(LOOM_TOOLS) hack/tools.sh env)
KUBE_APISERVER := $(patsubst KUBE_APISERVER=%,%,$(filter KUBE_APISERVER=%,$(TOOLS_ENV)))
KUBECTL        := $(patsubst KUBECTL=%,%,$(filter KUBECTL=%,$(TOOLS_ENV)))
CNI_PLUGINS_DIR := $(patsubst CNI_PLUGINS_DIR=%,%,$(filter CNI_PLUGINS_DIR=%,$(TOOLS_ENV)))
CNITOOL        := $(patsubst CNITOOL=%,%,$(filter CNITOOL=%,$(TOOLS_ENV)))

BIN := $(CURDIR)/bin
SIM_DIR ?= /tmp/loom-demo
# The demo cluster's primary network: vxlan, bgp, vxlan-crosssubnet or bridge.
MODE ?= vxlan

# What the tests need to find; exported so `go test` sees them.
export LOOM_BIN_DIR := $(BIN)
export LOOM_CNI_PLUGINS_DIR := $(CNI_PLUGINS_DIR)
export LOOM_KUBE_APISERVER := $(KUBE_APISERVER)
export LOOM_KUBECTL := $(KUBECTL)
export LOOM_CNITOOL := $(CNITOOL)
export LOOM_ETCD := /usr/bin/etcd

GOFLAGS_BUILD := -trimpath
CMDS := loom loom-ipam loomd loomctl loom-controller

.PHONY: all build tools test demo demo-down bench lint fuzz clean images

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./cmd/,$(CMDS)) ./e2e/cnibench ./e2e/escapeprobe ./e2e/fabricbench ./e2e/policybench ./e2e/sriovbench

tools:
	@hack/tools.sh all

# Unit, privileged and end-to-end tests; packages run in parallel. The end-to-end suites need
# the binaries and the tools above, and root (they skip, saying so, without it).
test: tools build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# Every fuzz target for FUZZTIME each (go test runs one target at a time).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "==> $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

demo: tools build
	$(BIN)/loomctl sim down --dir $(SIM_DIR) >/dev/null 2>&1 || true
	hack/demo.sh $(SIM_DIR) $(MODE)

demo-down:
	$(BIN)/loomctl sim down --dir $(SIM_DIR)

bench: tools build
	hack/bench.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run golang.org/x/tools/go/analysis/passes/shadow/cmd/shadow@v0.38.0 ./...

clean:
	rm -rf $(BIN)

# Container images loom/loomd and loom/loom-controller (images/*/Dockerfile), tagged $(VERSION)
# (default: git describe). Built with $(CONTAINER_ENGINE) (docker, or podman) when one answers;
# when none does, says so and succeeds without building.
images: VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
images: CONTAINER_ENGINE ?= docker
images: IMAGE_REPO ?= loom
images:
	@if ! $(CONTAINER_ENGINE) info >/dev/null 2>&1; then \
	  echo "no container engine answers ($(CONTAINER_ENGINE) info failed): skipping make images"; \
	  exit 0; \
	fi; \
	set -e; \
	for image in loomd loom-controller; do \
	  echo "==> $(IMAGE_REPO)/$$image:$(VERSION)"; \
	  $(CONTAINER_ENGINE) build -f images/$$image/Dockerfile -t $(IMAGE_REPO)/$$image:$(VERSION) .; \
	done

# podnet: the commands the README names. `make test` is what CI runs.
GO ?= go
BIN := bin/podnet
AGENT := bin/podnet-agent

.PHONY: build test vet fmt-check fuzz-short demo bench bench-net install image clean

build:
	# Static (no cgo): a plugin exec then skips ld.so and libc, ~1.3 ms of CPU per
	# invocation (docs/performance.md). The plugins need no cgo (pure-Go resolver).
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/podnet
	$(GO) build -o $(AGENT) ./cmd/podnet-agent

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The full suite: unit tests, root tests on the real kernel (in namespaces
# the tests create), the cnitool end-to-end test. Needs root.
test: fmt-check vet build fuzz-short
	$(GO) test -race -count=1 -timeout 60m ./...

# Every fuzz target briefly (the seeds also run in `go test`); `scripts/fuzz.sh 10m` is the soak.
fuzz-short:
	scripts/fuzz.sh 3s

demo: build
	./$(BIN) lab demo

bench: build
	./$(BIN) bench

# Pod network throughput vs the underlay (lab, iperf3) and node-join timing.
bench-net:
	scripts/bench-net.sh

install: build
	install -D -m 0755 $(BIN) /opt/cni/bin/podnet
	install -D -m 0755 $(AGENT) /usr/local/bin/podnet-agent
	/opt/cni/bin/podnet plugins install --dir /opt/cni/bin

# OCI image without docker (tools/image, go-containerregistry): both binaries
# static for linux/amd64 in /usr/local/bin, entrypoint the agent, tagged
# $(IMAGE_REPO):$(VERSION), written to $(IMAGE_TAR) for `ctr images import`,
# `docker load`, `podman load`, crane or skopeo.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_REPO ?= ghcr.io/podnet/podnet
IMAGE_BIN ?= bin/linux-amd64
IMAGE_TAR ?= bin/podnet-image.tar
# Image and file times: the commit's, so the same commit gives the same digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

image:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '-s -w' -o $(IMAGE_BIN)/podnet ./cmd/podnet
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '-s -w' -o $(IMAGE_BIN)/podnet-agent ./cmd/podnet-agent
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) -C tools/image run . -podnet $(abspath $(IMAGE_BIN))/podnet -agent $(abspath $(IMAGE_BIN))/podnet-agent \
		-version '$(VERSION)' -repo '$(IMAGE_REPO)' -o $(abspath $(IMAGE_TAR))

clean:
	rm -rf bin

# The upstream Kubernetes network e2e specs (ginkgo) against a throwaway
# `lab up --kubernetes` cluster, torn down even when specs fail
# (docs/e2e.md). Needs root. build.sh and test-images.sh only build what
# their cache lacks. Reports: $(E2E_REPORT_DIR)/<suite>/report.json.
E2E_LAB ?= e2e
E2E_NODES ?= 2
E2E_PROCS ?= 2
E2E_REPORT_DIR ?= bin/e2e
E2E_FLAGS ?=

.PHONY: e2e e2e-netpol
e2e: E2E_SUITE = conformance
e2e-netpol: E2E_SUITE = netpol
e2e e2e-netpol: build image
	tools/kubernetes/build.sh all
	tools/image/test-images.sh
	./$(AGENT) lab down --name $(E2E_LAB) >/dev/null
	./$(AGENT) lab up --kubernetes --name $(E2E_LAB) --nodes $(E2E_NODES) || { ./$(AGENT) lab down --name $(E2E_LAB); exit 1; }; \
	./$(AGENT) lab e2e --name $(E2E_LAB) --suite $(E2E_SUITE) --procs $(E2E_PROCS) --report-dir $(E2E_REPORT_DIR)/$(E2E_SUITE) $(E2E_FLAGS); rc=$$?; \
	./$(AGENT) lab down --name $(E2E_LAB); exit $$rc

# The ClusterNetworkPolicy conformance suite (sigs.k8s.io/network-policy-api
# v0.3.0) against a throwaway 2-node `lab up --kubernetes` cluster, torn
# down even when tests fail (docs/conformance/README.md). Needs root.
# build.sh and test-images.sh only build what their cache lacks. Report:
# $(CNP_REPORT) (the upstream ConformanceReport YAML), log beside it.
CNP_LAB ?= cnp
CNP_REPORT ?= bin/conformance/podnet-$(VERSION).yaml
CNP_FLAGS ?=

.PHONY: conformance-cnp
conformance-cnp: build image
	tools/kubernetes/build.sh kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl agnhost
	tools/image/test-images.sh
	tools/npconformance/build.sh
	./$(AGENT) lab down --name $(CNP_LAB) >/dev/null
	./$(AGENT) lab up --kubernetes --name $(CNP_LAB) --nodes 2 || { ./$(AGENT) lab down --name $(CNP_LAB); exit 1; }; \
	./$(AGENT) lab conformance-cnp --name $(CNP_LAB) --version '$(VERSION)' --report $(CNP_REPORT) $(CNP_FLAGS); rc=$$?; \
	./$(AGENT) lab down --name $(CNP_LAB); exit $$rc

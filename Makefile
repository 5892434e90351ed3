# podnet: the commands the README names. `make test` is what CI runs.
GO ?= go
BIN := bin/podnet
AGENT := bin/podnet-agent

.PHONY: build test vet fmt-check fuzz-short demo bench bench-net install clean

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

clean:
	rm -rf bin

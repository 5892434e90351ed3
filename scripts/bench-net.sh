#!/usr/bin/env bash
# The pod network's numbers (as root, on a quiet machine):
#   1. iperf3 single-stream TCP throughput in two labs — `auto` (pods on one
#      node, host-gw across one segment, VXLAN across the routed underlay)
#      and `vxlan` (VXLAN over one segment and over the routed underlay) —
#      each pod path with its ratio to the underlay between the same nodes;
#   2. node join -> route on every other node, 50 simulated nodes
#      (BenchmarkNodeJoin in ./agent).
#
#   scripts/bench-net.sh            # 3 runs x 3 s per pair
#   RUNS=5 SECONDS_PER_RUN=5 scripts/bench-net.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build
runs=${RUNS:-3}
secs=${SECONDS_PER_RUN:-3}
for backend in auto vxlan; do
	name=bench${backend//-/}
	bin/podnet lab down --name "$name" >/dev/null 2>&1 || true
	trap 'bin/podnet lab down --name '"$name"' >/dev/null 2>&1' EXIT
	bin/podnet lab up --name "$name" --nodes 4 --pods-per-node 2 --backend "$backend" >/dev/null
	bin/podnet lab bench --name "$name" --seconds "$secs" --runs "$runs"
	bin/podnet lab down --name "$name" >/dev/null
	trap - EXIT
	echo
done
go test -run '^$' -bench NodeJoin -benchtime 1x ./agent/ | grep -E 'Benchmark|join_bench'

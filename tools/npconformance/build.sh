#!/usr/bin/env bash
# Builds the ClusterNetworkPolicy conformance suite of
# sigs.k8s.io/network-policy-api v0.3.0 (the upstream test package
# sigs.k8s.io/network-policy-api/conformance, its manifests embedded) as a
# test binary from this module, once: it is cached as
# <cache>/np-conformance-v0.3.0.test and only rebuilt when missing, next to
# the module's standard ClusterNetworkPolicy CRD,
# <cache>/np-conformance-v0.3.0-crd.yaml (what `lab conformance-cnp`
# applies when the cluster has none). Prints the binary's path.
# `podnet-agent lab conformance-cnp` runs it (docs/conformance/README.md).
# Cold, on 2 busy cores: about 5 to 10 minutes.
#
#   tools/npconformance/build.sh
#   PODNET_TEST_CACHE=/tmp/x tools/npconformance/build.sh
set -euo pipefail
cd "$(dirname "$0")"
version=v0.3.0
cache=${PODNET_TEST_CACHE:-/var/cache/podnet-test}
out=$cache/np-conformance-$version.test
crd=$cache/np-conformance-$version-crd.yaml
mkdir -p "$cache"
if [ ! -f "$crd" ]; then
	dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api)
	[ -n "$dir" ] || { go mod download sigs.k8s.io/network-policy-api && dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api); }
	cp "$dir/config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml" "$crd.tmp"
	chmod 0644 "$crd.tmp"
	mv "$crd.tmp" "$crd"
fi
if [ ! -x "$out" ]; then
	start=$(date +%s)
	echo "building sigs.k8s.io/network-policy-api/conformance $version into $out..." >&2
	CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o "$out.tmp" sigs.k8s.io/network-policy-api/conformance
	mv "$out.tmp" "$out"
	echo "built np-conformance $version in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"

#!/usr/bin/env bash
# Builds the real kube-apiserver (k8s.io/kubernetes v1.34.4) for podnet's
# kubernetes-datastore tests, once: the binary is cached and only rebuilt
# when missing. Prints the binary's path.
#
#   tools/kube-apiserver/build.sh            # -> /var/cache/podnet-test/kube-apiserver-v1.34.4
#   PODNET_TEST_CACHE=/tmp/x tools/kube-apiserver/build.sh
#
# The tests look for the binary at $PODNET_KUBE_APISERVER, else at the
# cached path, and skip (with a message) when it is absent.
set -euo pipefail
cd "$(dirname "$0")"
version=v1.34.4
cache=${PODNET_TEST_CACHE:-/var/cache/podnet-test}
out=$cache/kube-apiserver-$version
if [ ! -x "$out" ]; then
	mkdir -p "$cache"
	start=$(date +%s)
	echo "building kube-apiserver $version into $out (a few minutes)..." >&2
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
-X k8s.io/component-base/version.gitVersion=$version \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=34" \
		-o "$out.tmp" .
	mv "$out.tmp" "$out"
	echo "built kube-apiserver in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"

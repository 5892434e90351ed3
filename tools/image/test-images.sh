#!/usr/bin/env bash
# Builds the container images the lab's Kubernetes v1.34.4 cluster and the
# upstream e2e network tests run (tools/image -test-images, see
# testimages.go) into <cache>/images-v1.34.4/, once: the directory is only
# rebuilt (replaced whole) when missing or when its inputs.sha256 differs
# from the hash of this module's sources and the Debian packages the images
# copy from (dpkg-query versions), e.g. after apt upgraded curl. Prints the
# directory, which holds
#
#   pause.tar      registry.k8s.io/pause:3.10.1
#   busybox.tar    registry.k8s.io/e2e-test-images/busybox:1.37.0-1
#   agnhost.tar    registry.k8s.io/e2e-test-images/agnhost:2.56, and :2.45 (the
#                  ClusterNetworkPolicy suite's tag: porter waits instead of
#                  exiting where SCTP is missing), with porter's TLS key pair
#   images.txt     "file ref digest" per image
#   inputs.sha256  what it was built from
#
# each a docker-archive tarball for `ctr -n k8s.io images import FILE`.
# Needs go, /bin/busybox (busybox-static), curl and netcat-openbsd
# (scripts/runtimes-setup.sh); builds agnhost with tools/kubernetes/build.sh
# when it is not cached yet.
#
#   tools/image/test-images.sh
#   PODNET_TEST_CACHE=/tmp/x tools/image/test-images.sh
set -euo pipefail
cd "$(dirname "$0")"
version=v1.34.4
cache=${PODNET_TEST_CACHE:-/var/cache/podnet-test}
out=$cache/images-$version
stamp=$({
	cat $(ls ./*.go | grep -v _test.go) pause/main.go go.mod go.sum test-images.sh
	dpkg-query -W busybox-static curl netcat-openbsd bind9-dnsutils libc-bin iproute2 bash 2>/dev/null || true
} | sha256sum | cut -d' ' -f1)
if [ ! -f "$out/images.txt" ] || [ "$(cat "$out/inputs.sha256" 2>/dev/null)" != "$stamp" ]; then
	agnhost=$cache/agnhost-$version
	[ -x "$agnhost" ] || ../kubernetes/build.sh agnhost >/dev/null
	mkdir -p "$cache"
	tmp=$(mktemp -d "$out.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "building test images into $out..." >&2
	porter=$(go -C ../kubernetes list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images/agnhost/porter
	go run . -test-images -agnhost "$agnhost" -porter "$porter" -o "$tmp" >&2
	echo "$stamp" >"$tmp/inputs.sha256"
	chmod 0755 "$tmp"
	rm -rf "$out"
	mv "$tmp" "$out"
	trap - EXIT
fi
echo "$out"

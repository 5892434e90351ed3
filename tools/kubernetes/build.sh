#!/usr/bin/env bash
# Builds the upstream Kubernetes v1.34.4 binaries podnet's tests and lab run,
# from this module (k8s.io/kubernetes with its staging modules at v0.34.4),
# once each: a binary is cached as <cache>/<name>-v1.34.4 and only rebuilt
# when missing (the e2e suite as e2e-network-v1.34.4.test: ginkgo runs only
# files named *.test). Prints the cache directory.
#
#   tools/kubernetes/build.sh                  # kube-apiserver only (the datastore tests)
#   tools/kubernetes/build.sh all              # + the lab cluster and e2e binaries
#   tools/kubernetes/build.sh kubelet kubectl  # just these
#   PODNET_TEST_CACHE=/tmp/x tools/kubernetes/build.sh all
#
# Names: kube-apiserver kube-controller-manager kube-scheduler kubelet
# kube-proxy kubectl agnhost ginkgo e2e-network.test. Cold, on 2 cores, `all`
# takes about 12 minutes.
set -euo pipefail
cd "$(dirname "$0")"
version=v1.34.4
cache=${PODNET_TEST_CACHE:-/var/cache/podnet-test}
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(kube-apiserver)
[ "${names[0]}" = all ] && names=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl agnhost ginkgo e2e-network.test)
ld="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
mkdir -p "$cache"
for n in "${names[@]}"; do
	out=$cache/$n-$version
	[ "$n" = e2e-network.test ] && out=$cache/e2e-network-$version.test
	[ -x "$out" ] && continue
	case $n in
	kube-apiserver) pkg=./cmd/kube-apiserver ;;
	kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl) pkg=k8s.io/kubernetes/cmd/$n ;;
	agnhost) pkg=k8s.io/kubernetes/test/images/agnhost ;;
	ginkgo) pkg=github.com/onsi/ginkgo/v2/ginkgo ;;
	e2e-network.test) pkg=./e2enet ;;
	*) echo "build.sh: unknown binary $n" >&2; exit 2 ;;
	esac
	start=$(date +%s)
	echo "building $n $version into $out..." >&2
	if [ "$n" = e2e-network.test ]; then
		CGO_ENABLED=0 go test -c -trimpath -ldflags "$ld" -o "$out.tmp" "$pkg"
	else
		CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out.tmp" "$pkg"
	fi
	mv "$out.tmp" "$out"
	echo "built $n in $(( $(date +%s) - start ))s" >&2
done
echo "$cache"

#!/usr/bin/env bash
# Installs what test/runtimes needs on a Debian 12 CI machine: podman 4.3
# (CNI backend), containerd 1.6 + runc, busybox-static (the tests build their
# busybox image from /bin/busybox), and curl, netcat-openbsd,
# bind9-dnsutils and iproute2 (tools/image -test-images copies curl, nc,
# dig and ss, with their libraries, into the lab's agnhost image: the e2e
# network tests run them in it). Idempotent: apt runs only for missing
# packages, and no existing config is overwritten.
#
# The tests themselves need no config from here: each run writes a private
# containers.conf (CONTAINERS_CONF, with the fixes below) and conflist, keeps
# podman's storage and a private containerd (root, state, socket, config
# with restrict_oom_score_adj = true) under /var/tmp/podnet-e2e, and removes
# all of it afterwards. What this script writes is for running podman by
# hand on the machine:
#   /etc/containers/containers.conf, only if absent: no systemd here (cgroupfs,
#   file events logger), and root lacks CAP_SYS_RESOURCE with a nofile hard
#   limit of 20000, so podman's default ulimits make runc fail.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "runtimes-setup: needs root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

need=()
for p in podman containerd runc busybox-static curl netcat-openbsd bind9-dnsutils iproute2; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if [ ! -e /etc/containers/containers.conf ]; then
	install -d -m 0755 /etc/containers
	cat >/etc/containers/containers.conf <<'EOF'
# Written by podnet's scripts/runtimes-setup.sh (delete to undo).
[network]
network_backend = "cni"

[engine]
cgroup_manager = "cgroupfs"   # PID 1 is not systemd
events_logger = "file"        # no journald
runtime = "runc"

[containers]
# root lacks CAP_SYS_RESOURCE and the nofile hard limit is 20000: podman's
# defaults (nofile=1048576, nproc=max) make runc fail to set rlimits.
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
EOF
	echo "runtimes-setup: wrote /etc/containers/containers.conf"
fi

echo "runtimes-setup: $(podman --version), $(containerd --version | cut -d' ' -f1,3), $(runc --version | head -1)"

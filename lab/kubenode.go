package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Kubernetes lab node is its network namespace plus a private mount
// namespace, made by the node's supervisor (`podnet-agent lab kubenode`,
// RunKubeNode), in which the host paths a node's CNI provider, kubelet and
// containerd use are the node's own directories, bind-mounted from
// <node dir>/host/<path with '/' as '-'>. containerd, kubelet and kube-proxy
// are the supervisor's children and share that mount namespace (kubelet's
// volume mounts must be visible to containerd's runc). Nothing is mounted
// in the machine's mount namespace.
var nodeHostPaths = []string{
	"/opt/cni/bin", "/etc/cni/net.d", "/run/podnet", "/var/lib/cni",
	"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/netns",
}

// kubeletSysctls are the kernel tunables kubelet insists on
// (setupKernelTunables). They are not per network namespace: with
// protectKernelDefaults kubelet only checks them, and each node reads these
// values from private files bind-mounted over /proc/sys, so the machine's
// own settings are never changed.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory": "1", "vm/panic_on_oom": "0",
	"kernel/panic": "10", "kernel/panic_on_oops": "1",
	"kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000",
}

func hostDir(n *Node, p string) string {
	return filepath.Join(n.StateDir, "host", strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", "-"))
}

func (n *Node) containerdSock() string { return filepath.Join(n.StateDir, "containerd.sock") }

// KubeNodePIDs is what a node supervisor records in <node dir>/pids.json:
// its children by name.
type KubeNodePIDs map[string]int

// NodePIDs reads node's supervisor's children.
func (l *Lab) NodePIDs(node string) (KubeNodePIDs, error) {
	n := l.Node(node)
	if n == nil {
		return nil, fmt.Errorf("no node %q", node)
	}
	b, err := os.ReadFile(filepath.Join(n.StateDir, "pids.json"))
	if err != nil {
		return nil, err
	}
	var p KubeNodePIDs
	return p, json.Unmarshal(b, &p)
}

// startKubeNode starts node n's supervisor in n's namespace with a private
// mount namespace.
func (l *Lab) startKubeNode(n *Node) error {
	args := []string{"lab", "kubenode", "--root", filepath.Dir(l.Dir), "--name", l.Name, "--node", n.Name}
	pid, err := spawnIn(NetnsPath(n.Netns), true, l.AgentBin, args, filepath.Join(n.StateDir, "kubenode.log"))
	if err != nil {
		return fmt.Errorf("node %s: start supervisor: %w", n.Name, err)
	}
	l.Kubernetes.NodePIDs[n.Name] = pid
	return l.Save()
}

// RunKubeNode is a node's supervisor: called in the node's network
// namespace and a private mount namespace (startKubeNode), it mounts the
// node's host paths and sysctl files, writes the daemons' configurations,
// starts containerd, imports the images, starts kubelet and kube-proxy, and
// restarts any of them that exits (as systemd would) until ctx ends; then
// it stops them (containers and their shims keep running: `lab down`
// removes them after deleting the pods).
func RunKubeNode(ctx context.Context, root, name, node string) error {
	l, err := Load(root, name)
	if err != nil {
		return err
	}
	n := l.Node(node)
	if n == nil || l.Kubernetes == nil {
		return fmt.Errorf("no Kubernetes node %q in lab %s", node, name)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", node)
	if err := mountNodePaths(n); err != nil {
		return err
	}
	cfgs, err := l.writeNodeConfigs(n)
	if err != nil {
		return err
	}
	s := &supervisor{dir: n.StateDir, log: log, pids: KubeNodePIDs{}}
	k := l.Kubernetes
	s.start(ctx, "containerd", "/usr/bin/containerd", "--config", cfgs["containerd"])
	if err := waitFile(ctx, n.containerdSock(), 30*time.Second); err != nil {
		s.stopAll()
		return fmt.Errorf("containerd: %w", err)
	}
	if err := l.importImages(ctx, n); err != nil {
		s.stopAll()
		return err
	}
	s.start(ctx, "kubelet", k.bin("kubelet"), "--config="+cfgs["kubelet"], "--kubeconfig="+k.Kubeconfig,
		"--hostname-override="+n.Name, "--node-ip="+n.IP.String(), "--v=1")
	s.start(ctx, "kube-proxy", k.bin("kube-proxy"), "--config="+cfgs["kube-proxy"], "--v=1")
	<-ctx.Done()
	s.stopAll()
	return nil
}

// mountNodePaths bind-mounts the node's directories over the host paths
// and its sysctl files over /proc/sys (in our private mount namespace).
func mountNodePaths(n *Node) error {
	for _, p := range nodeHostPaths {
		src := hostDir(n, p)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			// A mount point must exist; record it so down removes it.
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(filepath.Join(n.StateDir, "created-dirs"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			fmt.Fprintln(f, p)
			f.Close()
		}
		if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, p, err)
		}
	}
	sdir := filepath.Join(n.StateDir, "sysctl")
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		return err
	}
	for k, v := range kubeletSysctls {
		f := filepath.Join(sdir, strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			return err
		}
		if err := unix.Mount(f, "/proc/sys/"+k, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over /proc/sys/%s: %w", f, k, err)
		}
	}
	return nil
}

// importImages imports the test images and podnet's into the node's
// containerd (the manifest names podnet's by the tag it carries).
func (l *Lab) importImages(ctx context.Context, n *Node) error {
	k := l.Kubernetes
	ctr := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "/usr/bin/ctr", append([]string{"--address", n.containerdSock(), "--namespace", "k8s.io"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, tail(out))
		}
		return nil
	}
	for _, img := range kubeImages {
		if err := ctr("images", "import", filepath.Join(k.ImagesDir, img)); err != nil {
			return err
		}
	}
	return ctr("images", "import", k.PodnetImage)
}

// writeNodeConfigs writes containerd's, kubelet's and kube-proxy's
// configuration files for n and returns their paths by daemon.
func (l *Lab) writeNodeConfigs(n *Node) (map[string]string, error) {
	d := n.StateDir
	cidrs := l.ClusterCIDR.String()
	if l.ClusterCIDR6.IsValid() {
		cidrs += "," + l.ClusterCIDR6.String()
	}
	files := map[string]string{
		"containerd": fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10.1"
    # root here lacks CAP_SYS_RESOURCE: never lower a container's oom_score_adj
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %[5]q
`, filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state"), n.containerdSock(),
			filepath.Join(d, "containerd", "opt"), filepath.Join(d, "runc")),
		"kubelet": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
# several kubelets share this machine's cgroup tree: no QoS hierarchy
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://%[1]s
address: %[2]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
resolvConf: ""
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
protectKernelDefaults: true
`, n.containerdSock(), n.IP),
		"kube-proxy": fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %[1]q}
mode: nftables
clusterCIDR: %[2]q
hostnameOverride: %[3]s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# 0: leave the machine-wide conntrack table size and timeouts alone
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, l.Kubernetes.Kubeconfig, cidrs, n.Name),
	}
	out := map[string]string{}
	for name, body := range files {
		p := filepath.Join(d, name+".conf")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

// supervisor runs a node's daemons, restarting each that exits.
type supervisor struct {
	dir  string
	log  *slog.Logger
	mu   sync.Mutex
	pids KubeNodePIDs
	wg   sync.WaitGroup
	// stopping: stopAll runs, no restarts.
	stopping bool
}

func (s *supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func (s *supervisor) start(ctx context.Context, name, bin string, args ...string) {
	s.wg.Add(1)
	started := make(chan struct{})
	go func() {
		defer s.wg.Done()
		first := true
		for {
			logf, err := os.OpenFile(filepath.Join(s.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				s.log.Error("open log", "daemon", name, "err", err)
				return
			}
			cmd := exec.Command(bin, args...)
			cmd.Stdout, cmd.Stderr = logf, logf
			err = cmd.Start()
			logf.Close()
			if err == nil {
				// Below the tests' own processes: a lab node is background work.
				_ = unix.Setpriority(unix.PRIO_PROCESS, cmd.Process.Pid, 10)
				s.record(name, cmd)
			}
			if first {
				close(started)
				first = false
			}
			if err != nil {
				s.log.Error("start", "daemon", name, "err", err)
			} else {
				s.log.Info("started", "daemon", name, "pid", cmd.Process.Pid)
				err = cmd.Wait()
			}
			if ctx.Err() != nil || s.isStopping() {
				return
			}
			s.log.Warn("exited; restarting in 1s", "daemon", name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	<-started
}

func (s *supervisor) record(name string, cmd *exec.Cmd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pids[name] = cmd.Process.Pid
	b, _ := json.Marshal(s.pids)
	tmp := filepath.Join(s.dir, "pids.json.tmp")
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, filepath.Join(s.dir, "pids.json"))
	}
}

// stopAll stops kubelet and kube-proxy, then containerd: SIGTERM, SIGKILL
// after 10 s.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	s.stopping = true
	pids := map[string]int{}
	for k, v := range s.pids {
		pids[k] = v
	}
	s.mu.Unlock()
	for _, group := range [][]string{{"kubelet", "kube-proxy"}, {"containerd"}} {
		for _, name := range group {
			if pid := pids[name]; pid > 0 {
				stopPID(pid, syscall.SIGTERM, 10*time.Second)
			}
		}
	}
	s.wg.Wait()
}

func waitFile(ctx context.Context, p string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", p, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

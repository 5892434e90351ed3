package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podnet/podnet/internal/netns"
)

// KubeVersion is the Kubernetes release a Kubernetes lab runs
// (tools/kubernetes builds it).
const KubeVersion = "v1.34.4"

// Kubernetes lab address plan (inside the lab's namespaces only).
const (
	kubeServiceCIDR = "10.96.0.0/16"
	kubeAPIPort     = 6443
)

// Kube is the Kubernetes part of a lab started with --kubernetes: a control
// plane namespace running etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, and per node a supervisor (`podnet-agent lab kubenode`)
// in the node's namespace and a private mount namespace running containerd,
// kubelet and kube-proxy. podnet itself is the DaemonSet of
// deploy/podnet.yaml, applied with kubectl.
type Kube struct {
	ControlPlane Endpoint `json:"controlPlane"`
	// Kubeconfig is the admin kubeconfig (server: the control plane's
	// address, reachable from the lab's namespaces).
	Kubeconfig string `json:"kubeconfig"`
	// BinDir holds the Kubernetes binaries (<name>-<KubeVersion>).
	BinDir    string `json:"binDir"`
	ImagesDir string `json:"imagesDir"`
	// PodnetImage is the podnet image tarball imported on every node.
	PodnetImage string `json:"podnetImage"`
	// Manifest is the podnet manifest as applied: deploy/podnet.yaml with
	// the lab's ConfigMap values and podnet image tag.
	Manifest string `json:"manifest"`
	// PIDs of the control plane processes by name, and of each node's
	// supervisor by node name.
	PIDs     map[string]int `json:"pids"`
	NodePIDs map[string]int `json:"nodePIDs"`
}

// KubeOptions are what Up needs beyond Options for a Kubernetes lab.
type KubeOptions struct {
	// BinDir holds kube-apiserver-<KubeVersion>, kubelet-..., ...
	// (default $PODNET_TEST_CACHE or /var/cache/podnet-test).
	BinDir string
	// ImagesDir holds the pause, busybox and agnhost image tarballs
	// (default <BinDir>/images-<KubeVersion>).
	ImagesDir string
	// PodnetImage is the tarball `make image` wrote (default
	// podnet-image.tar next to the agent binary).
	PodnetImage string
	// beforeInstall, if set (tests), runs once every node is registered,
	// before podnet is applied.
	beforeInstall func(*Lab) error
}

func (k *Kube) bin(name string) string { return filepath.Join(k.BinDir, name+"-"+KubeVersion) }

func (o *KubeOptions) defaults(agentBin string) error {
	if o.BinDir == "" {
		o.BinDir = os.Getenv("PODNET_TEST_CACHE")
		if o.BinDir == "" {
			o.BinDir = "/var/cache/podnet-test"
		}
	}
	if o.ImagesDir == "" {
		o.ImagesDir = filepath.Join(o.BinDir, "images-"+KubeVersion)
	}
	if o.PodnetImage == "" {
		o.PodnetImage = filepath.Join(filepath.Dir(agentBin), "podnet-image.tar")
	}
	var missing []string
	for _, n := range kubeBinaries {
		if _, err := os.Stat(filepath.Join(o.BinDir, n+"-"+KubeVersion)); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--kubernetes: no %s in %s: build them with `tools/kubernetes/build.sh all` (about 12 minutes the first time)", strings.Join(missing, ", "), o.BinDir)
	}
	for _, img := range kubeImages {
		if _, err := os.Stat(filepath.Join(o.ImagesDir, img)); err != nil {
			return fmt.Errorf("--kubernetes: no image %s in %s: build them with `tools/image/test-images.sh`", img, o.ImagesDir)
		}
	}
	if _, err := os.Stat(o.PodnetImage); err != nil {
		return fmt.Errorf("--kubernetes: no podnet image at %s: build it with `make image`", o.PodnetImage)
	}
	for _, p := range []string{etcdBin, "/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("--kubernetes: %s missing: apt-get install etcd-server containerd runc (scripts/runtimes-setup.sh)", p)
		}
	}
	return nil
}

// etcdBin is Debian's etcd (apt etcd-server), which kube-apiserver v1.34
// works with.
const etcdBin = "/usr/bin/etcd"

var kubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// kubeImages are the tarballs imported on every node besides podnet's.
var kubeImages = []string{"pause.tar", "busybox.tar", "agnhost.tar"}

// upKube is Up for a Kubernetes lab: fabric, control plane, nodes, podnet
// applied, every node Ready.
func (l *Lab) upKube(ctx context.Context, o Options, base int, say func(string, ...any)) error {
	if err := l.makeFabric(base, say); err != nil {
		return err
	}
	k := l.Kubernetes
	k.ControlPlane = Endpoint{Netns: nsPrefix(l.Name) + "cp", IP: underlayIP(base, 0, 10)}
	if err := newNS(k.ControlPlane.Netns); err != nil {
		return err
	}
	if err := l.Save(); err != nil {
		return err
	}
	fh, err := handle(l.Fabric)
	if err != nil {
		return err
	}
	defer fh.Close()
	gw := underlayIP(base, 0, 254)
	if err := attach(fh, "v-cp", k.ControlPlane.Netns, "eth0", "br0", netip.PrefixFrom(k.ControlPlane.IP, 24), gw); err != nil {
		return err
	}
	if err := l.writeManifest(); err != nil {
		return err
	}
	start := time.Now()
	if err := l.startControlPlane(ctx); err != nil {
		return err
	}
	say("control plane: netns %s at %s: etcd, kube-apiserver %s, kube-controller-manager, kube-scheduler (%s)",
		k.ControlPlane.Netns, k.ControlPlane.IP, KubeVersion, time.Since(start).Round(100*time.Millisecond))

	// Nodes: all on segment 0 with the control plane, which routes each
	// node's pod CIDR to it as the datacenter's router would.
	for i := 1; i <= o.Nodes; i++ {
		n := &Node{
			Name: fmt.Sprintf("n%d", i), Netns: fmt.Sprintf("%sn%d", nsPrefix(l.Name), i),
			IP: underlayIP(base, 0, 10+i), StateDir: filepath.Join(l.Dir, fmt.Sprintf("n%d", i)),
		}
		n.ConfDir = filepath.Join(n.StateDir, "host", "etc-cni-net.d")
		if err := newNS(n.Netns); err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, n)
		if err := l.Save(); err != nil {
			return err
		}
		if err := attach(fh, "v-"+n.Name, n.Netns, "eth0", "br0", netip.PrefixFrom(n.IP, 24), gw); err != nil {
			return err
		}
		if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
			return err
		}
		if err := l.startKubeNode(n); err != nil {
			return err
		}
		say("node %s: netns %s, underlay %s, containerd + kubelet + kube-proxy (nftables) under supervisor pid %d", n.Name, n.Netns, n.IP, k.NodePIDs[n.Name])
	}
	cs, err := l.KubeClient()
	if err != nil {
		return err
	}
	start = time.Now()
	if err := l.waitNodesRegistered(ctx, cs, 120*time.Second); err != nil {
		return err
	}
	say("nodes registered with pod CIDRs %s (%s); NotReady until podnet is installed", l.nodeSubnets(), time.Since(start).Round(100*time.Millisecond))

	if o.Kube.beforeInstall != nil {
		if err := o.Kube.beforeInstall(l); err != nil {
			return err
		}
	}
	start = time.Now()
	if err := l.applyPodnet(ctx); err != nil {
		return err
	}
	if err := l.waitNodesReady(ctx, cs, 180*time.Second); err != nil {
		return err
	}
	say("podnet: applied %s (DaemonSet podnet); every node Ready (%s)", k.Manifest, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (l *Lab) nodeSubnets() string {
	var s []string
	for _, n := range l.Nodes {
		for _, p := range n.Subnets {
			s = append(s, n.Name+"="+p.String())
		}
	}
	return strings.Join(s, " ")
}

// KubeClient is an admin clientset for a Kubernetes lab; it dials from the
// control plane's namespace, so it works from the root namespace too.
func (l *Lab) KubeClient() (*k8s.Clientset, error) {
	cfg, err := l.kubeRESTConfig()
	if err != nil {
		return nil, err
	}
	return k8s.NewForConfig(cfg)
}

func (l *Lab) kubeRESTConfig() (*rest.Config, error) {
	if l.Kubernetes == nil {
		return nil, fmt.Errorf("lab %s was not started with --kubernetes", l.Name)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cp := NetnsPath(l.Kubernetes.ControlPlane.Netns)
	cfg.Dial = func(_ context.Context, _, addr string) (net.Conn, error) { return dialIn(cp, addr, 10*time.Second) }
	cfg.Timeout = 30 * time.Second
	return cfg, nil
}

// waitNodesRegistered waits until every lab node has a Node object with pod
// CIDRs (kube-controller-manager allocates them), records them, and routes
// them from the control plane's namespace via the node.
func (l *Lab) waitNodesRegistered(ctx context.Context, cs *k8s.Clientset, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		got := 0
		if err == nil {
			for _, kn := range nodes.Items {
				n := l.Node(kn.Name)
				if n == nil || len(kn.Spec.PodCIDRs) == 0 {
					continue
				}
				n.Subnets = n.Subnets[:0]
				for _, c := range kn.Spec.PodCIDRs {
					if p, err := netip.ParsePrefix(c); err == nil {
						n.Subnets = append(n.Subnets, p)
					}
				}
				got++
			}
		}
		if got == len(l.Nodes) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes registered with pod CIDRs after %s (last error: %v); see %s/*/kubelet.log", got, len(l.Nodes), d, err, l.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	h, err := handle(l.Kubernetes.ControlPlane.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, n := range l.Nodes {
		for _, p := range n.Subnets {
			if !p.Addr().Is4() {
				continue
			}
			r := &netlink.Route{Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}, Gw: n.IP.AsSlice()}
			if err := h.RouteReplace(r); err != nil {
				return fmt.Errorf("control plane route %s via %s: %w", p, n.IP, err)
			}
		}
	}
	return l.Save()
}

// waitNodesReady waits until every node reports Ready and its
// NetworkUnavailable condition (if any) is False.
func (l *Lab) waitNodesReady(ctx context.Context, cs *k8s.Clientset, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		var notReady []string
		if err == nil {
			for _, kn := range nodes.Items {
				if !NodeReady(&kn) {
					notReady = append(notReady, kn.Name)
				}
			}
			if len(notReady) == 0 && len(nodes.Items) == len(l.Nodes) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes not Ready after %s: %v (last error: %v); see `podnet lab kubectl --name %s -- -n podnet-system get pods -o wide` and %s/*/kubelet.log", d, notReady, err, l.Name, l.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NodeReady reports whether n is Ready with its network available.
func NodeReady(n *corev1.Node) bool {
	ready := false
	for _, c := range n.Status.Conditions {
		switch c.Type {
		case corev1.NodeReady:
			ready = c.Status == corev1.ConditionTrue
		case corev1.NodeNetworkUnavailable:
			if c.Status != corev1.ConditionFalse {
				return false
			}
		}
	}
	return ready
}

// Kubectl runs kubectl against the lab, in the control plane's namespace,
// with the given stdio, and returns when it exits.
func (l *Lab) Kubectl(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if l.Kubernetes == nil {
		return fmt.Errorf("lab %s was not started with --kubernetes", l.Name)
	}
	cmd := exec.CommandContext(ctx, l.Kubernetes.bin("kubectl"), append([]string{"--kubeconfig", l.Kubernetes.Kubeconfig}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := startIn(NetnsPath(l.Kubernetes.ControlPlane.Netns), cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// kubectlOutput runs kubectl with args and returns its combined output,
// and an error naming the command and its output when it fails.
func (l *Lab) kubectlOutput(ctx context.Context, args ...string) ([]byte, error) {
	var b bytes.Buffer
	if err := l.Kubectl(ctx, args, nil, &b, &b); err != nil {
		return b.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, tail(b.Bytes()))
	}
	return b.Bytes(), nil
}

// startIn starts cmd inside namespace path (the child inherits the
// namespace of the thread that forks it); Wait works from anywhere.
func startIn(path string, cmd *exec.Cmd) error {
	return netns.Do(path, cmd.Start)
}

// spawnIn is spawn inside namespace path; with newMountNS the process also
// gets a private mount namespace (a copy of ours, propagation private).
func spawnIn(path string, newMountNS bool, bin string, args []string, logPath string) (int, error) {
	var pid int
	err := netns.Do(path, func() error {
		var flags uintptr
		if newMountNS {
			flags = syscall.CLONE_NEWNS
		}
		var err error
		pid, err = spawnAttr(bin, args, logPath, &syscall.SysProcAttr{Setsid: true, Unshareflags: flags})
		return err
	})
	return pid, err
}

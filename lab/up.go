package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/metrics"
	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/sysctl"
	"github.com/podnet/podnet/plugins/all"
)

// Options of Up.
type Options struct {
	Name        string // default DefaultName
	Root        string // default DefaultRoot
	Nodes       int    // default 2
	PodsPerNode int    // 0: none (the CLI's default is 2)
	Backend     string // vxlan (default), host-gw or auto
	// IPv6 makes the lab dual-stack: an IPv6 cluster CIDR as well (a ULA
	// /48 derived from the lab's name, as the IPv4 one), given to every
	// agent, so pods get an IPv4 and an IPv6 address. The underlay stays
	// IPv4 (VXLAN carries IPv6 pods over it).
	IPv6 bool
	// AgentBin is the podnet-agent binary (agents and the etcd
	// supervisor); PodnetBin the podnet binary the plugin links point at.
	AgentBin, PodnetBin string
	// Kubernetes makes a real Kubernetes cluster (kube.go): control plane,
	// kubelets with containerd, kube-proxy, podnet installed by kubectl
	// from Kube.Manifest. PodsPerNode and IPv6 do not apply.
	Kubernetes bool
	Kube       KubeOptions
	// LeaseTTL of the agents' etcd lease (default 15s).
	LeaseTTL time.Duration
	Out      io.Writer // progress (default io.Discard)
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := ValidName(o.Name); err != nil {
		return err
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 50 {
		return fmt.Errorf("--nodes %d: must be 1..50", o.Nodes)
	}
	if o.PodsPerNode < 0 || o.PodsPerNode > 100 {
		return fmt.Errorf("--pods-per-node %d: must be 0..100", o.PodsPerNode)
	}
	if o.Backend == "" {
		o.Backend = VXLAN
	}
	switch o.Backend {
	case VXLAN, HostGW, Auto:
	default:
		return fmt.Errorf("--backend %q: must be vxlan, host-gw or auto", o.Backend)
	}
	if o.IPv6 && o.Backend == HostGW {
		// The agent routes a family host-gw only via an underlay address
		// of that family (agent/overlay: "host-gw route ... needs an
		// underlay address of the same family"); the lab's is IPv4.
		return errors.New("--ipv6 with --backend host-gw: the lab's underlay is IPv4 only and host-gw needs an IPv6 underlay for IPv6 pods; use vxlan or auto (auto carries IPv6 pods over VXLAN)")
	}
	if o.Kubernetes && (o.IPv6 || o.PodsPerNode > 0) {
		return errors.New("--kubernetes: pods are made with kubectl (`podnet lab kubectl -- ...`) and the cluster is IPv4: drop --pods-per-node and --ipv6")
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 15 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	for _, b := range []*string{&o.AgentBin, &o.PodnetBin} {
		if *b == "" {
			return errors.New("lab: AgentBin and PodnetBin must be set")
		}
		p, err := filepath.Abs(*b)
		if err != nil {
			return err
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		*b = p
	}
	if o.Kubernetes {
		return o.Kube.defaults(o.AgentBin)
	}
	return nil
}

// Up creates lab o.Name and returns it. On failure what was made stays
// recorded in lab.json for Down (call Down to clean up).
func Up(ctx context.Context, o Options) (*Lab, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	dir := Dir(o.Root, o.Name)
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err == nil {
		return nil, fmt.Errorf("lab %q already exists (%s): `podnet lab down --name %s` first", o.Name, dir, o.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := plan(o.Name)
	l := &Lab{
		Name: o.Name, Dir: dir, Backend: o.Backend, Phase: "creating",
		ClusterCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(base), 0, 0}), 16),
		AgentBin:    o.AgentBin, PodnetBin: o.PodnetBin,
	}
	if o.IPv6 {
		l.ClusterCIDR6 = clusterCIDR6(base)
	}
	if err := l.Save(); err != nil {
		return nil, err
	}
	say := func(format string, a ...any) { fmt.Fprintf(o.Out, format+"\n", a...) }
	up := l.up
	if o.Kubernetes {
		l.Kubernetes = &Kube{BinDir: o.Kube.BinDir, ImagesDir: o.Kube.ImagesDir, PodnetImage: o.Kube.PodnetImage,
			PIDs: map[string]int{}, NodePIDs: map[string]int{}}
		up = l.upKube
	}
	if err := up(ctx, o, base, say); err != nil {
		return l, errors.Join(err, l.Save())
	}
	l.Phase = "up"
	return l, l.Save()
}

// makeFabric creates the fabric and router namespaces (underlay segments
// br0 and br1, routed) and the external host.
func (l *Lab) makeFabric(base int, say func(string, ...any)) error {
	// Fabric: br0 and br1, two underlay L2 segments. A router netns with
	// a veth leg on each segment and one to the external host routes
	// between them. The router is its own namespace with veth legs, as a
	// real router has NICs: routing out of a bridge device would make the
	// kernel segment VXLAN's GSO packets in software (a bridge device
	// offers no encapsulation offloads), which no real underlay does.
	l.Fabric = nsPrefix(l.Name) + "fabric"
	l.Router = nsPrefix(l.Name) + "router"
	for _, ns := range []string{l.Fabric, l.Router} {
		if err := newNS(ns); err != nil {
			return err
		}
		if err := l.Save(); err != nil {
			return err
		}
	}
	fh, err := handle(l.Fabric)
	if err != nil {
		return err
	}
	defer fh.Close()
	rh, err := handle(l.Router)
	if err != nil {
		return err
	}
	defer rh.Close()
	for seg := range 2 {
		br := fmt.Sprintf("br%d", seg)
		if err := fh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}); err != nil {
			return fmt.Errorf("fabric %s: %w", br, err)
		}
		if err := upWithAddr(fh, br, netip.Prefix{}); err != nil {
			return err
		}
		leg := fmt.Sprintf("seg%d", seg)
		if err := attach(fh, "rt-"+leg, l.Router, leg, br, netip.PrefixFrom(underlayIP(base, seg, 254), 24), netip.Addr{}); err != nil {
			return err
		}
	}
	if err := netns.Do(NetnsPath(l.Router), func() error { return sysctl.Set("net.ipv4.ip_forward", "1") }); err != nil {
		return fmt.Errorf("router forwarding: %w", err)
	}
	say("fabric: netns %s bridges underlay segments %s and %s; netns %s routes between them",
		l.Fabric, netip.PrefixFrom(underlayIP(base, 0, 0), 24), netip.PrefixFrom(underlayIP(base, 1, 0), 24), l.Router)

	// External: a host outside the cluster CIDR, behind the router.
	l.External = Endpoint{Netns: nsPrefix(l.Name) + "external", IP: underlayIP(base, 9, 1)}
	if err := newNS(l.External.Netns); err != nil {
		return err
	}
	if err := l.Save(); err != nil {
		return err
	}
	if err := attach(rh, "ext", l.External.Netns, "eth0", "", netip.PrefixFrom(l.External.IP, 24), underlayIP(base, 9, 254)); err != nil {
		return err
	}
	if err := upWithAddr(rh, "ext", netip.PrefixFrom(underlayIP(base, 9, 254), 24)); err != nil {
		return err
	}
	say("external: netns %s at %s (outside the cluster: pods reach it masqueraded)", l.External.Netns, l.External.IP)
	return nil
}

func (l *Lab) up(ctx context.Context, o Options, base int, say func(string, ...any)) error {
	if err := l.makeFabric(base, say); err != nil {
		return err
	}
	fh, err := handle(l.Fabric)
	if err != nil {
		return err
	}
	defer fh.Close()

	// etcd in a detached supervisor.
	if err := l.startServe(); err != nil {
		return err
	}
	say("etcd: embedded, in `podnet-agent lab serve` (pid %d) at %v", l.Etcd.PID, l.Etcd.Endpoints)

	// Nodes and their agents.
	for i := 1; i <= o.Nodes; i++ {
		seg := 0
		if o.Backend != HostGW {
			seg = (i - 1) % 2
		}
		n := &Node{
			Name: fmt.Sprintf("n%d", i), Netns: fmt.Sprintf("%sn%d", nsPrefix(l.Name), i), Segment: seg,
			IP: underlayIP(base, seg, 10+i), StateDir: filepath.Join(l.Dir, fmt.Sprintf("n%d", i)),
		}
		n.ConfDir = filepath.Join(n.StateDir, "net.d")
		if err := newNS(n.Netns); err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, n)
		if err := l.Save(); err != nil {
			return err
		}
		if err := attach(fh, "v-"+n.Name, n.Netns, "eth0", fmt.Sprintf("br%d", seg), netip.PrefixFrom(n.IP, 24), underlayIP(base, seg, 254)); err != nil {
			return err
		}
		if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
			return err
		}
		if err := l.StartAgent(n.Name, o.LeaseTTL); err != nil {
			return err
		}
		say("node %s: netns %s, underlay %s on br%d, agent pid %d (%s backend)", n.Name, n.Netns, n.IP, seg, n.AgentPID, o.Backend)
	}
	for _, n := range l.Nodes {
		if err := l.waitReady(ctx, n, 30*time.Second); err != nil {
			return err
		}
		say("node %s: agent leased %v, wrote %s", n.Name, n.Subnets, filepath.Join(n.ConfDir, agent.ConflistName))
	}
	// Until an agent has applied a state with every node, its pods'
	// traffic to a node it does not know yet is masqueraded (and that
	// mapping stays in conntrack): wait for every agent to know all.
	for _, n := range l.Nodes {
		if err := l.waitSeesAll(ctx, n, 30*time.Second); err != nil {
			return err
		}
	}
	if err := l.Save(); err != nil {
		return err
	}

	// Pods through the real plugins.
	if _, err := all.Install(l.binDir(), l.PodnetBin); err != nil {
		return fmt.Errorf("install plugin links: %w", err)
	}
	// Each pod gets a Pod object in namespace default, labelled
	// app=<name>, written before its CNI ADD as in Kubernetes (pods.go).
	cli, err := l.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	octx, cancel := opCtx(ctx)
	_, err = ensureNamespace(octx, cli, DefaultNamespace)
	cancel()
	if err != nil {
		return err
	}
	for _, n := range l.Nodes {
		for j := 1; j <= o.PodsPerNode; j++ {
			p := &Pod{Namespace: DefaultNamespace, Name: fmt.Sprintf("%s-p%d", n.Name, j), Node: n.Name}
			p.Netns = nsPrefix(l.Name) + p.Name
			p.ContainerID = "lab-" + l.Name + "-" + p.Name
			p.Labels = map[string]string{"app": p.Name}
			start := time.Now()
			if err := l.wire(ctx, cli, n, p, nil); err != nil {
				return err
			}
			say("pod %s: netns %s on node %s, %v (CNI ADD %s)", p.Name, p.Netns, n.Name, p.IPs, time.Since(start).Round(time.Millisecond))
		}
	}
	return nil
}

func (l *Lab) binDir() string   { return filepath.Join(l.Dir, "bin") }
func (l *Lab) cacheDir() string { return filepath.Join(l.Dir, "cache") }

// cni returns a CNI client that runs the plugins inside node n's netns with
// the conflist n's agent wrote.
func (l *Lab) cni(n *Node) *cniclient.Client {
	return cniclient.New(cniclient.Config{
		ConfDir: n.ConfDir, Path: []string{l.binDir()}, CacheDir: l.cacheDir(),
		NodeNetns: NetnsPath(n.Netns), Stderr: io.Discard,
	})
}

// attachment is p's CNI runtime configuration, with the CNI_ARGS a
// kubelet's runtime passes (IgnoreUnknown=1 first, as containerd does).
func (l *Lab) attachment(p *Pod) cniclient.Attachment {
	return cniclient.Attachment{ContainerID: p.ContainerID, NetNS: NetnsPath(p.Netns), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.namespace()}, {"K8S_POD_NAME", p.Name}, {"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}}}
}

func (l *Lab) addPod(ctx context.Context, n *Node, p *Pod) error {
	c := l.cni(n)
	list, err := c.Load(agent.NetworkName)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := c.Add(ctx, list, l.attachment(p))
	if err != nil {
		return fmt.Errorf("pod %s: CNI ADD: %w", p.Name, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return err
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			p.IPs = append(p.IPs, a.Unmap())
		}
	}
	return l.Save()
}

// waitReady waits for n's conflist (written after node.json) and records
// the subnets.
func (l *Lab) waitReady(ctx context.Context, n *Node, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(filepath.Join(n.ConfDir, agent.ConflistName)); err == nil {
			st, err := nodestate.Read(n.StateDir)
			if err == nil && (!l.ClusterCIDR6.IsValid() || slices.ContainsFunc(st.Subnets, func(s netip.Prefix) bool { return s.Addr().Is6() })) {
				n.Subnets = st.Subnets
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: agent not ready after %s (no %s); see %s", n.Name, d, filepath.Join(n.ConfDir, agent.ConflistName), filepath.Join(n.StateDir, "agent.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitSeesAll waits until n's agent reports (on its metrics socket) that
// it applied a state with every node of the lab and is ready.
func (l *Lab) waitSeesAll(ctx context.Context, n *Node, d time.Duration) error {
	want := fmt.Sprintf("podnet_nodes %d\n", len(l.Nodes))
	deadline := time.Now().Add(d)
	for {
		body, err := metrics.Fetch(ctx, n.MetricsAddress(), "/metrics")
		if err == nil && strings.Contains(body, want) {
			if _, err = metrics.Fetch(ctx, n.MetricsAddress(), "/readyz"); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: agent has not applied a state with all %d nodes after %s (%v); see %s", n.Name, len(l.Nodes), d, err, filepath.Join(n.StateDir, "agent.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StartAgent starts node's agent process (detached, logging to
// <stateDir>/agent.log) and records its pid.
func (l *Lab) StartAgent(node string, leaseTTL time.Duration) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	if leaseTTL == 0 {
		leaseTTL = 15 * time.Second
	}
	args := []string{"agent", "--node-name", n.Name, "--cluster-cidr", l.ClusterCIDR.String()}
	if l.ClusterCIDR6.IsValid() {
		args = append(args, "--cluster-cidr", l.ClusterCIDR6.String())
	}
	args = append(args, "--backend", l.Backend,
		"--underlay", "eth0", "--netns", NetnsPath(n.Netns), "--state-dir", n.StateDir, "--cni-conf-dir", n.ConfDir,
		"--etcd-endpoints", l.Etcd.Endpoints[0], "--resync", "2s", "--lease-ttl", leaseTTL.String(),
		"--metrics-address", n.MetricsAddress())
	if lv := os.Getenv("PODNET_LAB_LOG_LEVEL"); lv != "" {
		args = append(args, "--log-level", lv) // e.g. debug: the policy loop's timings
	}
	pid, err := spawn(l.AgentBin, args, filepath.Join(n.StateDir, "agent.log"))
	if err != nil {
		return fmt.Errorf("node %s: start agent: %w", n.Name, err)
	}
	n.AgentPID = pid
	return l.Save()
}

// StopAgent sends sig to node's agent and waits (up to 10s) until it is
// gone.
func (l *Lab) StopAgent(node string, sig syscall.Signal) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	if n.AgentPID == 0 {
		return nil
	}
	err := stopPID(n.AgentPID, sig, 10*time.Second)
	n.AgentPID = 0
	return errors.Join(err, l.Save())
}

// StopEtcd stops the lab's etcd (its `lab serve` process), as an outage
// would; agents and pods keep running. StartEtcd brings it back.
func (l *Lab) StopEtcd() error {
	if l.Etcd.PID == 0 {
		return nil
	}
	err := stopPID(l.Etcd.PID, syscall.SIGTERM, 10*time.Second)
	l.Etcd.PID = 0
	return errors.Join(err, l.Save())
}

// StartEtcd starts the lab's etcd again on its data and its previous URLs
// (after StopEtcd).
func (l *Lab) StartEtcd() error {
	if l.Etcd.PID != 0 && alive(l.Etcd.PID) {
		return nil
	}
	return l.startServe()
}

func (l *Lab) startServe() error {
	etcdFile := filepath.Join(l.Dir, "etcd.json")
	os.Remove(etcdFile)
	args := []string{"lab", "serve", "--name", l.Name, "--dir", l.Dir}
	if len(l.Etcd.Endpoints) > 0 && l.Etcd.PeerURL != "" {
		args = append(args, "--client-url", l.Etcd.Endpoints[0], "--peer-url", l.Etcd.PeerURL)
	}
	pid, err := spawn(l.AgentBin, args, filepath.Join(l.Dir, "serve.log"))
	if err != nil {
		return fmt.Errorf("start etcd supervisor: %w", err)
	}
	l.Etcd.PID = pid
	if err := l.Save(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(etcdFile); err == nil {
			var e Etcd
			if json.Unmarshal(b, &e) == nil && len(e.Endpoints) > 0 {
				l.Etcd.Endpoints, l.Etcd.PeerURL = e.Endpoints, e.PeerURL
				return l.Save()
			}
		}
		if !alive(pid) || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(l.Dir, "serve.log"))
			return fmt.Errorf("etcd supervisor (pid %d) did not come up: %s", pid, tail(log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// spawn starts bin detached (own session, stdin /dev/null, output appended
// to logPath) and reaps it in the background while this process lives.
func spawn(bin string, args []string, logPath string) (int, error) {
	return spawnAttr(bin, args, logPath, &syscall.SysProcAttr{Setsid: true})
}

// spawnAttr is spawn with the given process attributes.
func spawnAttr(bin string, args []string, logPath string, attr *syscall.SysProcAttr) (int, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	go cmd.Wait() //nolint:errcheck // reap; the process outlives us otherwise
	return cmd.Process.Pid, nil
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
		}
	}
	return true
}

// stopPID signals pid and waits for it to go, escalating to SIGKILL.
func stopPID(pid int, sig syscall.Signal, d time.Duration) error {
	if !alive(pid) {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(d)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
			if alive(pid) {
				return fmt.Errorf("pid %d still running after SIGKILL", pid)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// newNS creates a named namespace with lo up.
func newNS(name string) error {
	p, err := netns.Create(name)
	if err != nil {
		return err
	}
	return netns.Do(p, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
}

func handle(ns string) (*netlink.Handle, error) {
	h, err := vns.GetFromPath(NetnsPath(ns))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

func upWithAddr(h *netlink.Handle, name string, addr netip.Prefix) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	if addr.IsValid() {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}

// attach connects namespace ns to the namespace of fh: a veth fabSide
// (enslaved to bridge br unless "") whose peer is peer in ns with addr and,
// when gw is valid, a default route via gw.
func attach(fh *netlink.Handle, fabSide, ns, peer, br string, addr netip.Prefix, gw netip.Addr) error {
	nsh, err := vns.GetFromPath(NetnsPath(ns))
	if err != nil {
		return err
	}
	defer nsh.Close()
	if err := fh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fabSide, MTU: 1500}, PeerName: peer, PeerNamespace: netlink.NsFd(nsh)}); err != nil {
		return fmt.Errorf("veth %s to %s: %w", fabSide, ns, err)
	}
	if br != "" {
		fl, err := fh.LinkByName(fabSide)
		if err != nil {
			return err
		}
		b, err := fh.LinkByName(br)
		if err != nil {
			return err
		}
		if err := fh.LinkSetMaster(fl, b); err != nil {
			return err
		}
		if err := fh.LinkSetUp(fl); err != nil {
			return err
		}
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := upWithAddr(h, peer, addr); err != nil {
		return err
	}
	if !gw.IsValid() {
		return nil
	}
	el, err := h.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: el.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route in %s: %w", ns, err)
	}
	return nil
}

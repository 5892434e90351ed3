package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/agent/overlay"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/roottest"
	"github.com/podnet/podnet/internal/sysctl"
)

// cluster is a namespaces lab for one test: a fabric namespace routing
// between two bridged L2 segments (100.64.0.0/24 and 100.64.1.0/24), node
// namespaces on them, an embedded etcd, one in-process agent per node and
// one pod per node.
type cluster struct {
	t       testing.TB
	eps     []string
	fabric  string // netns path
	fh      *netlink.Handle
	nodes   map[string]*node
	backend string
	v6      bool
	// kubeconfig, when set, selects the kubernetes datastore (see
	// kube_root_test.go); beforeStart registers a node (its Node object)
	// before its agent starts.
	kubeconfig  string
	beforeStart func(*node)
	// quiet logs agents at warning level (benchmarks).
	quiet bool
}

type node struct {
	name, ns string
	ip       netip.Addr
	h        *netlink.Handle
	stateDir string
	cancel   context.CancelFunc
	done     chan struct{}
	ag       *agent.Agent
	pod      string // pod netns path
	podIP    netip.Addr
	podIP6   netip.Addr
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func handleAt(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := vns.GetFromPath(path)
	must(t, err)
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	t.Cleanup(h.Close)
	return h
}

func linkUp(t testing.TB, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	must(t, err)
	must(t, h.LinkSetUp(l))
	return l
}

func addAddr(t testing.TB, h *netlink.Handle, l netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, err)
	must(t, h.AddrAdd(l, a))
}

func newCluster(t testing.TB, backend string) *cluster {
	roottest.Require(t)
	e, err := embedded.Start(t.TempDir())
	must(t, err)
	t.Cleanup(func() { e.Close() })
	c := &cluster{t: t, eps: e.Endpoints(), nodes: map[string]*node{}, backend: backend}
	_, c.fabric = roottest.NewNS(t, "fab")
	c.fh = handleAt(t, c.fabric)
	for i, br := range []string{"br0", "br1"} {
		must(t, c.fh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}))
		addAddr(t, c.fh, linkUp(t, c.fh, br), fmt.Sprintf("100.64.%d.254/24", i))
	}
	roottest.In(t, c.fabric, func() error { return sysctl.Set("net.ipv4.ip_forward", "1") })
	return c
}

// addNode creates node name on segment seg with host number host and starts
// its agent.
func (c *cluster) addNode(name string, seg, host int) *node {
	t := c.t
	_, p := roottest.NewNS(t, "node"+name)
	n := &node{name: name, ns: p, ip: netip.MustParseAddr(fmt.Sprintf("100.64.%d.%d", seg, host)), stateDir: t.TempDir()}
	n.h = handleAt(t, p)
	nsh, err := vns.GetFromPath(p)
	must(t, err)
	defer nsh.Close()
	fside := "v-" + name
	must(t, c.fh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fside, MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(nsh)}))
	fl := linkUp(t, c.fh, fside)
	br, _ := c.fh.LinkByName(fmt.Sprintf("br%d", seg))
	must(t, c.fh.LinkSetMaster(fl, br))
	l := linkUp(t, n.h, "eth0")
	addAddr(t, n.h, l, n.ip.String()+"/24")
	must(t, n.h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(fmt.Sprintf("100.64.%d.254", seg))}))
	c.nodes[name] = n
	if c.beforeStart != nil {
		c.beforeStart(n)
	}
	c.start(n)
	return n
}

func (c *cluster) start(n *node) {
	t := c.t
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	if c.v6 {
		cidrs = append(cidrs, netip.MustParsePrefix("fd00:244::/48"))
	}
	cfg := agent.Config{
		NodeName:       n.name,
		ClusterCIDRs:   cidrs,
		Backend:        c.backend,
		Underlay:       "100.64.0.0/16",
		StateDir:       n.stateDir,
		NetNS:          n.ns,
		ResyncInterval: time.Second,
		Datastore:      agent.DatastoreConfig{Endpoints: c.eps, LeaseTTL: 5 * time.Second},
	}
	level := slog.LevelInfo
	if c.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	if c.kubeconfig != "" {
		cfg.Datastore = agent.DatastoreConfig{Type: "kubernetes", Kubeconfig: c.kubeconfig, Log: log}
	}
	store, err := agent.OpenStore(context.Background(), cfg.WithDefaults().Datastore)
	must(t, err)
	ag, err := agent.New(cfg, store, log)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	n.ag, n.cancel, n.done = ag, cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		defer store.Close()
		if err := ag.Run(ctx); err != nil {
			t.Errorf("agent %s: %v", n.name, err)
		}
	}()
	t.Cleanup(func() { c.stop(n) })
}

func (c *cluster) stop(n *node) {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// waitState waits for the node's state file (the agent has leased).
func waitState(t testing.TB, n *node) nodestate.State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := nodestate.Read(n.stateDir)
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: no state file: %v", n.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// addPod makes a pod namespace on n, routed like ptp: the pod has
// subnet.5/32, the node the gateway .1/32 on its veth and a /32 route.
func (c *cluster) addPod(n *node) {
	t := c.t
	st := waitState(t, n)
	sub := st.Subnets[0]
	gw := st.Gateways[0]
	n.podIP = gw.Next().Next().Next().Next() // .5
	_, p := roottest.NewNS(t, "pod"+n.name)
	n.pod = p
	ph := handleAt(t, p)
	pns, err := vns.GetFromPath(p)
	must(t, err)
	defer pns.Close()
	must(t, n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vpod", MTU: st.MTU}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pns)}))
	hl := linkUp(t, n.h, "vpod")
	addAddr(t, n.h, hl, gw.String()+"/32")
	must(t, n.h.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: hostNet(n.podIP), Scope: netlink.SCOPE_LINK}))
	pl := linkUp(t, ph, "eth0")
	addAddr(t, ph, pl, n.podIP.String()+"/32")
	must(t, ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK}))
	must(t, ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: gw.AsSlice()}))
	if !sub.Contains(n.podIP) {
		t.Fatalf("pod ip %s not in %s", n.podIP, sub)
	}
	if len(st.Subnets) > 1 {
		gw6 := st.Gateways[1]
		n.podIP6 = gw6.Next().Next().Next().Next()
		for _, x := range []struct {
			h  *netlink.Handle
			l  netlink.Link
			ip netip.Addr
		}{{n.h, hl, gw6}, {ph, pl, n.podIP6}} {
			must(t, x.h.AddrAdd(x.l, &netlink.Addr{IPNet: hostNet(x.ip), Flags: unix.IFA_F_NODAD}))
		}
		must(t, n.h.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: hostNet(n.podIP6), Scope: netlink.SCOPE_LINK}))
		must(t, ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: hostNet(gw6), Scope: netlink.SCOPE_LINK}))
		must(t, ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: gw6.AsSlice(), Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}))
	}
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// reach asserts ICMP and TCP from a's pod to b's pod, and that b sees a's
// pod address (no NAT).
func reach(t testing.TB, a, b *node) {
	t.Helper()
	roottest.Eventually(t, 15*time.Second, fmt.Sprintf("ping %s pod -> %s pod", a.name, b.name), func() error {
		_, err := probe.Ping(a.pod, b.podIP.AsSlice(), time.Second)
		return err
	})
	l, err := probe.Listen(b.pod, "0.0.0.0:7777")
	must(t, err)
	defer l.Close()
	for _, proto := range []string{"tcp", "udp"} {
		from, err := probe.Exchange(a.pod, proto, net.JoinHostPort(b.podIP.String(), "7777"), 3*time.Second)
		if err != nil {
			t.Fatalf("%s %s -> %s: %v", proto, a.name, b.name, err)
		}
		if from != a.podIP.String() {
			t.Fatalf("%s: %s pod seen as %s, want %s (NAT between pods?)", proto, a.name, from, a.podIP)
		}
	}
}

// bigDF sends a UDP datagram making a 1400-byte IP packet with DF set from
// a's pod to b's pod echo server and waits for the echo.
func bigDF(t testing.TB, a, b *node) {
	t.Helper()
	l, err := probe.Listen(b.pod, "0.0.0.0:7778")
	must(t, err)
	defer l.Close()
	var conn *net.UDPConn
	must(t, netns.Do(a.pod, func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.podIP.AsSlice(), Port: 7778})
		return err
	}))
	defer conn.Close()
	rc, _ := conn.SyscallConn()
	var serr error
	must(t, rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	}))
	must(t, serr)
	payload := make([]byte, 1400-20-8)
	for i := range payload {
		payload[i] = 'x'
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("send 1400-byte DF: %v", err)
	}
	buf := make([]byte, 2000)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("1400-byte DF packet %s -> %s got no echo: %v", a.name, b.name, err)
	}
	if n < len(payload) {
		t.Fatalf("short echo %d", n)
	}
}

func routesOf(t testing.TB, n *node) map[string]netlink.Route {
	t.Helper()
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	must(t, err)
	out := map[string]netlink.Route{}
	for _, r := range rs {
		out[r.Dst.String()] = r
	}
	return out
}

func fdbOf(t testing.TB, n *node) map[string]string {
	t.Helper()
	l, err := n.h.LinkByName("podnet.1")
	if err != nil {
		return nil
	}
	es, err := n.h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	must(t, err)
	out := map[string]string{}
	for _, e := range es {
		out[e.HardwareAddr.String()] = e.IP.String()
	}
	return out
}

func TestAgentsVXLAN(t *testing.T) {
	c := newCluster(t, "vxlan")
	a, b, cc := c.addNode("a", 0, 1), c.addNode("b", 0, 2), c.addNode("c", 1, 3)
	for _, n := range []*node{a, b, cc} {
		c.addPod(n)
	}
	sa, sb := waitState(t, a), waitState(t, b)
	if sa.Subnets[0] == sb.Subnets[0] || sa.MTU != 1450 {
		t.Fatalf("state a %+v b %+v", sa, sb)
	}
	reach(t, a, b)
	reach(t, b, a)
	reach(t, a, cc) // across the routed fabric
	reach(t, cc, b)
	bigDF(t, a, cc)

	// Every remote goes over podnet.1.
	rs := routesOf(t, a)
	for _, n := range []*node{b, cc} {
		r, ok := rs[waitState(t, n).Subnets[0].String()]
		if !ok {
			t.Fatalf("a has no route to %s: %v", n.name, rs)
		}
		if l, _ := a.h.LinkByIndex(r.LinkIndex); l.Attrs().Name != "podnet.1" {
			t.Fatalf("route to %s via %s", n.name, l.Attrs().Name)
		}
	}

	// Masquerade: a pod reaching an address outside the cluster (the
	// fabric router) is seen as its node; pods are not masqueraded among
	// themselves (checked by reach above).
	l, err := probe.Listen(c.fabric, "100.64.0.254:7779")
	must(t, err)
	from, err := probe.Exchange(a.pod, "tcp", "100.64.0.254:7779", 3*time.Second)
	l.Close()
	must(t, err)
	if from != a.ip.String() {
		t.Fatalf("pod -> outside seen as %s, want node address %s (masquerade)", from, a.ip)
	}

	// Drift repair: a route deleted by hand comes back.
	bsub := sb.Subnets[0].String()
	r := rs[bsub]
	must(t, a.h.RouteDel(&r))
	roottest.Eventually(t, 5*time.Second, "route to b restored", func() error {
		if _, ok := routesOf(t, a)[bsub]; !ok {
			return errors.New("still missing")
		}
		return nil
	})
	reach(t, a, b)

	// Restart adopts: stop a's agent, the datapath stays; start again,
	// same subnet, same device.
	dev, _ := a.h.LinkByName("podnet.1")
	c.stop(a)
	if _, err := probe.Ping(a.pod, b.podIP.AsSlice(), 2*time.Second); err != nil {
		t.Fatalf("datapath torn down on stop: %v", err)
	}
	c.start(a)
	time.Sleep(1500 * time.Millisecond)
	if s := waitState(t, a); s.Subnets[0] != sa.Subnets[0] {
		t.Fatalf("restart changed subnet %s -> %s", sa.Subnets[0], s.Subnets[0])
	}
	if dev2, _ := a.h.LinkByName("podnet.1"); dev2.Attrs().Index != dev.Attrs().Index {
		t.Fatal("restart re-created the vxlan device")
	}
	reach(t, a, cc)

	// The etcd lease of a is revoked behind its back (as if it had
	// expired during a partition): a leases again, gets the same subnet
	// and publishes again.
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.eps})
	must(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	gr, err := cli.Get(ctx, etcd.DefaultPrefix+"/nodes/a")
	must(t, err)
	if len(gr.Kvs) != 1 {
		t.Fatal("no record of a")
	}
	oldLease := gr.Kvs[0].Lease
	_, err = cli.Revoke(ctx, clientv3.LeaseID(oldLease))
	must(t, err)
	roottest.Eventually(t, 10*time.Second, "a re-published after losing its lease", func() error {
		gr, err := cli.Get(ctx, etcd.DefaultPrefix+"/nodes/a")
		if err != nil || len(gr.Kvs) != 1 || gr.Kvs[0].Lease == oldLease {
			return fmt.Errorf("not yet (%v)", err)
		}
		return nil
	})
	if s := waitState(t, a); s.Subnets[0] != sa.Subnets[0] {
		t.Fatalf("re-lease changed subnet %s -> %s", sa.Subnets[0], s.Subnets[0])
	}
	reach(t, b, a)

	// Node c leaves: its agent stops, its keys are deleted; a and b drop
	// its route and FDB entry.
	c.stop(cc)
	csub := waitState(t, cc).Subnets[0]
	_, err = cli.Delete(ctx, etcd.DefaultPrefix+"/nodes/c")
	must(t, err)
	_, err = cli.Delete(ctx, etcd.DefaultPrefix+"/subnets/"+csub.Addr().String()+"-24")
	must(t, err)
	cmac := overlay.VtepMAC("c", 1).String()
	for _, n := range []*node{a, b} {
		roottest.Eventually(t, 5*time.Second, "c removed from "+n.name, func() error {
			if _, ok := routesOf(t, n)[csub.String()]; ok {
				return errors.New("route to c still there")
			}
			if _, ok := fdbOf(t, n)[cmac]; ok {
				return errors.New("fdb entry of c still there")
			}
			return nil
		})
	}
	reach(t, a, b)
}

func TestAgentsHostGW(t *testing.T) {
	c := newCluster(t, "host-gw")
	a, b := c.addNode("a", 0, 1), c.addNode("b", 0, 2)
	c.addPod(a)
	c.addPod(b)
	if s := waitState(t, a); s.MTU != 1500 {
		t.Fatalf("host-gw MTU %d", s.MTU)
	}
	reach(t, a, b)
	reach(t, b, a)
	r := routesOf(t, a)[waitState(t, b).Subnets[0].String()]
	if r.Gw.String() != b.ip.String() {
		t.Fatalf("host-gw route via %s, want %s", r.Gw, b.ip)
	}
	if _, err := a.h.LinkByName("podnet.1"); err == nil {
		t.Fatal("host-gw made a vxlan device")
	}
}

func TestAgentsAuto(t *testing.T) {
	c := newCluster(t, "auto")
	a, b, cc := c.addNode("a", 0, 1), c.addNode("b", 0, 2), c.addNode("c", 1, 3)
	for _, n := range []*node{a, b, cc} {
		c.addPod(n)
	}
	reach(t, a, b)
	reach(t, a, cc)
	reach(t, cc, b)
	roottest.Eventually(t, 5*time.Second, "auto routes", func() error {
		rs := routesOf(t, a)
		rb, rc := rs[waitState(t, b).Subnets[0].String()], rs[waitState(t, cc).Subnets[0].String()]
		if rb.Gw.String() != b.ip.String() {
			return fmt.Errorf("same-L2 node b not via host-gw: %v", rb)
		}
		if l, err := a.h.LinkByIndex(rc.LinkIndex); err != nil || l.Attrs().Name != "podnet.1" {
			return fmt.Errorf("routed node c not via vxlan: %v", rc)
		}
		return nil
	})
}

// TestAgentsDualStack: IPv6 pod subnets ride the same VXLAN device over
// the IPv4 underlay (NDP neighbour for the remote subnet's :: address).
func TestAgentsDualStack(t *testing.T) {
	c := newCluster(t, "vxlan")
	c.v6 = true
	a, b := c.addNode("a", 0, 1), c.addNode("b", 1, 2)
	c.addPod(a)
	c.addPod(b)
	reach(t, a, b)
	roottest.Eventually(t, 15*time.Second, "ping6 a pod -> b pod", func() error {
		_, err := probe.Ping(a.pod, b.podIP6.AsSlice(), time.Second)
		return err
	})
	l, err := probe.Listen(b.pod, "[::]:7777")
	must(t, err)
	defer l.Close()
	from, err := probe.Exchange(a.pod, "tcp", net.JoinHostPort(b.podIP6.String(), "7777"), 3*time.Second)
	must(t, err)
	if from != a.podIP6.String() {
		t.Fatalf("v6: seen as %s, want %s", from, a.podIP6)
	}
}

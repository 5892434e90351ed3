package e2e

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/sysctl"
)

// The full chain: bridge (hairpinMode) + host-local, portmap (the
// portMappings capability), bandwidth (rates in the config), firewall and
// tuning (sysctls), driven by the real cnitool through add, check, status,
// del and gc, asserting the datapath with real packets and the kernel
// objects over netlink.
const (
	chainSubnet   = "10.79.0.0/24"
	chainGateway  = "10.79.0.1"
	chainBridge   = "pne2ec0"
	containerPort = 8080
	// tuning's sysctls, read back inside the pod.
	somaxconn = "1111"
	rpFilter  = "2"
	// bandwidth's rates (bits/s) and bursts (bits).
	bwRate  = 20_000_000
	bwBurst = 1_000_000
)

// chainConf is the full chain as a conflist of cniVersion version.
func (n *node) chainConf(name, version string) string {
	return fmt.Sprintf(`{
  "cniVersion": %q,
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "dataDir": %q},
    {"type": "bandwidth", "ingressRate": %d, "ingressBurst": %d, "egressRate": %d, "egressBurst": %d},
    {"type": "firewall"},
    {"type": "tuning", "dataDir": %q,
     "sysctl": {"net.core.somaxconn": %q, "net.ipv4.conf.IFNAME.rp_filter": %q}}
  ]
}`, version, name, chainBridge, n.dataDir, chainSubnet, filepath.Join(n.dataDir, "portmap"),
		bwRate, bwBurst, bwRate, bwBurst, filepath.Join(n.dataDir, "tuning"), somaxconn, rpFilter)
}

// chainNet writes the chain conflist and removes cnitool's cache entries of
// it at the end.
func (n *node) chainNet(version string) string {
	n.t.Helper()
	name := fmt.Sprintf("pne2e-chain-%d-%d", os.Getpid(), seq.Add(1))
	n.writeConf(name, n.chainConf(name, version))
	n.t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(libcniCache, "results", name+"-*"))
		for _, f := range files {
			os.Remove(f)
		}
	})
	return name
}

// capArgs is the CAP_ARGS cnitool passes as runtimeConfig: one mapping.
func capArgs(hostPort int) []string {
	return []string{fmt.Sprintf(`%s={"portMappings":[{"hostPort":%d,"containerPort":%d,"protocol":"tcp"}]}`,
		cniclient.EnvCapabilityArgs, hostPort, containerPort)}
}

// chainResult parses an ADD result of the chain: its one IPv4 address and
// its interfaces.
func chainResult(t *testing.T, out, version string) (netip.Addr, []*current.Interface) {
	t.Helper()
	r, err := current.NewResult([]byte(out))
	if err != nil {
		t.Fatalf("parse result %q: %v", out, err)
	}
	if r.Version() != version {
		t.Errorf("result cniVersion %q, want %s", r.Version(), version)
	}
	res, err := current.GetResult(r) // converts to the newest version
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1: %s", len(res.IPs), out)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if !netip.MustParsePrefix(chainSubnet).Contains(ip) {
		t.Fatalf("result address %s not in %s", ip, chainSubnet)
	}
	return ip, res.Interfaces
}

// ifbName is the bandwidth plugin's ifb for (network, container ID): "bwp"
// and the first 12 hex digits of sha512(network + containerID), as the
// reference names it.
func ifbName(network, cid string) string {
	s := sha512.Sum512([]byte(network + cid))
	return fmt.Sprintf("bwp%x", s[:6])
}

// podSysctl reads a sysctl inside the pod's namespace.
func podSysctl(t *testing.T, pod, name string) string {
	t.Helper()
	var v string
	if err := netns.Do(pod, func() error {
		var err error
		v, err = sysctl.Get(name)
		return err
	}); err != nil {
		t.Fatalf("sysctl %s in pod: %v", name, err)
	}
	return v
}

// nftSet returns the elements of set in table inet table in the namespace
// at path; ok is false when the table or set does not exist.
func nftSet(t *testing.T, path, table, set string) (els []nftables.SetElement, ok bool) {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	s, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: table}, set)
	if err != nil {
		return nil, false // ENOENT: no table or no set
	}
	if els, err = c.GetSetElements(s); err != nil {
		t.Fatalf("elements of %s %s: %v", table, set, err)
	}
	return els, true
}

// hostPortMapped reports whether podnet's portmap table maps tcp hostPort
// to ip:containerPort (map hostports4: inet_proto . inet_service :
// ipv4_addr . inet_service, each field padded to 4 bytes).
func hostPortMapped(t *testing.T, path string, hostPort int, ip netip.Addr) bool {
	t.Helper()
	els, _ := nftSet(t, path, "podnet-portmap", "hostports4")
	for _, e := range els {
		k, v := e.Key, e.Val
		if len(k) >= 6 && k[0] == 6 && int(binary.BigEndian.Uint16(k[4:6])) == hostPort &&
			len(v) >= 6 && netip.AddrFrom4([4]byte(v[0:4])) == ip && int(binary.BigEndian.Uint16(v[4:6])) == containerPort {
			return true
		}
	}
	return false
}

// firewalled reports whether podnet's firewall table lets ip's traffic
// through (set pods4).
func firewalled(t *testing.T, path string, ip netip.Addr) bool {
	t.Helper()
	els, _ := nftSet(t, path, "podnet-firewall", "pods4")
	for _, e := range els {
		if len(e.Key) == 4 && netip.AddrFrom4([4]byte(e.Key)) == ip {
			return true
		}
	}
	return false
}

// chainPod is one pod on the chain network.
type chainPod struct {
	path     string
	cid      string
	hostPort int
	ip       netip.Addr
	listener *probe.Listener
}

// addChainPod makes a pod with an echo server on containerPort and ADDs it
// with cnitool, mapping hostPort.
func (n *node) addChainPod(network, version string, hostPort int) *chainPod {
	n.t.Helper()
	p := &chainPod{path: newPod(n.t, false), hostPort: hostPort}
	p.cid = cniclient.DefaultContainerID(p.path)
	l, err := probe.Listen(p.path, fmt.Sprintf("0.0.0.0:%d", containerPort))
	if err != nil {
		n.t.Fatal(err)
	}
	p.listener = l
	n.t.Cleanup(func() { l.Close() })
	out := n.must(n.runEnv(capArgs(hostPort), n.tools.cnitool, "add", network, p.path))
	var ifs []*current.Interface
	p.ip, ifs = chainResult(n.t, out, version)

	// bandwidth appended its ifb (no sandbox) to the result.
	want := ifbName(network, p.cid)
	found := false
	for _, i := range ifs {
		found = found || (i.Name == want && i.Sandbox == "")
	}
	if !found {
		n.t.Errorf("ADD result does not list the ifb %s: %s", want, out)
	}
	return p
}

// assertChainUp checks everything the chain's ADD promises for p.
func (n *node) assertChainUp(network string, p *chainPod) {
	n.t.Helper()
	t := n.t
	// portmap: the node reaches the pod on its host port (output chain),
	// and so does the pod itself through the node (hairpin, masqueraded
	// so the reply comes back through the DNAT).
	addr := net.JoinHostPort(chainGateway, fmt.Sprint(p.hostPort))
	if _, err := probe.Exchange(n.ns, "tcp", addr, 5*time.Second); err != nil {
		t.Errorf("node -> %s (host port): %v", addr, err)
	}
	if from, err := probe.Exchange(p.path, "tcp", addr, 5*time.Second); err != nil {
		t.Errorf("pod -> itself through %s (hairpin): %v", addr, err)
	} else if from == p.ip.String() {
		t.Errorf("hairpin connection reached the pod from its own address %s: not masqueraded", from)
	}
	// bridge (isGateway) + firewall: the pod reaches the node.
	if _, err := probe.Ping(p.path, net.ParseIP(chainGateway), 3*time.Second); err != nil {
		t.Errorf("pod -> gateway ping: %v", err)
	}

	// bandwidth: the ifb exists in the node netns with a tbf root qdisc at
	// the egress rate.
	h := handle(t, n.ns)
	ifb, err := h.LinkByName(ifbName(network, p.cid))
	if err != nil {
		t.Errorf("ifb %s not in the node netns: %v", ifbName(network, p.cid), err)
	} else {
		if ifb.Type() != "ifb" {
			t.Errorf("%s is a %s, want ifb", ifb.Attrs().Name, ifb.Type())
		}
		qs, err := h.QdiscList(ifb)
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, q := range qs {
			if tbf, isTbf := q.(*netlink.Tbf); isTbf && q.Attrs().Parent == netlink.HANDLE_ROOT {
				ok = tbf.Rate == bwRate/8
			}
		}
		if !ok {
			t.Errorf("ifb %s has no root tbf at %d bytes/s: %v", ifb.Attrs().Name, bwRate/8, qs)
		}
	}

	// tuning: the sysctls read back inside the pod.
	if got := podSysctl(t, p.path, "net.core.somaxconn"); got != somaxconn {
		t.Errorf("pod net.core.somaxconn = %s, want %s", got, somaxconn)
	}
	if got := podSysctl(t, p.path, "net.ipv4.conf.eth0.rp_filter"); got != rpFilter {
		t.Errorf("pod net.ipv4.conf.eth0.rp_filter = %s, want %s", got, rpFilter)
	}

	// host-local reserved the address.
	if _, err := os.Stat(filepath.Join(n.dataDir, network, p.ip.String())); err != nil {
		t.Errorf("no host-local reservation for %s: %v", p.ip, err)
	}

	// podnet's own tables hold the pod's elements.
	if n.tools.podnetPlugins {
		if !hostPortMapped(t, n.ns, p.hostPort, p.ip) {
			t.Errorf("inet podnet-portmap hostports4 lacks tcp . %d : %s . %d", p.hostPort, p.ip, containerPort)
		}
		if !firewalled(t, n.ns, p.ip) {
			t.Errorf("inet podnet-firewall pods4 lacks %s", p.ip)
		}
	}
}

// assertChainDown checks that nothing of p's attachment is left on the node.
func (n *node) assertChainDown(network string, p *chainPod) {
	n.t.Helper()
	t := n.t
	if linkExists(t, n.ns, ifbName(network, p.cid)) {
		t.Errorf("ifb %s still in the node netns after DEL", ifbName(network, p.cid))
	}
	if !n.podIfGone(p.path, "eth0") {
		t.Errorf("pod still has eth0 %s after DEL", reapWait)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, network, p.ip.String())); err == nil {
		t.Errorf("host-local reservation for %s still exists", p.ip)
	}
	addr := net.JoinHostPort(chainGateway, fmt.Sprint(p.hostPort))
	if _, err := probe.Exchange(n.ns, "tcp", addr, time.Second); err == nil {
		t.Errorf("host port %s still answers after DEL", addr)
	}
	if n.tools.podnetPlugins {
		if hostPortMapped(t, n.ns, p.hostPort, p.ip) {
			t.Errorf("inet podnet-portmap still maps tcp . %d after DEL", p.hostPort)
		}
		if firewalled(t, n.ns, p.ip) {
			t.Errorf("inet podnet-firewall pods4 still holds %s after DEL", p.ip)
		}
	}
}

func TestCNIToolFullChain(t *testing.T) {
	n := newNode(t)
	network := n.chainNet("1.1.0")
	origSomaxconn := ""
	{
		p := newPod(t, false)
		origSomaxconn = podSysctl(t, p, "net.core.somaxconn")
		if origSomaxconn == somaxconn {
			t.Fatalf("a fresh netns already has somaxconn %s; pick another test value", somaxconn)
		}
	}

	a := n.addChainPod(network, "1.1.0", 18080)
	n.assertChainUp(network, a)
	if !linkExists(t, n.ns, chainBridge) {
		t.Errorf("bridge %s not in the node netns", chainBridge)
	}
	n.must(n.runEnv(capArgs(a.hostPort), n.tools.cnitool, "check", network, a.path))
	n.must(n.cnitool("status", network, a.path))

	n.must(n.runEnv(capArgs(a.hostPort), n.tools.cnitool, "del", network, a.path))
	n.assertChainDown(network, a)
	if n.tools.podnetPlugins {
		// podnet's tuning restores sysctls on DEL (the reference does not).
		if got := podSysctl(t, a.path, "net.core.somaxconn"); got != origSomaxconn {
			t.Errorf("pod somaxconn after DEL = %s, want the original %s", got, origSomaxconn)
		}
		// With the last mapping gone, portmap drops its table.
		if _, ok := nftSet(t, n.ns, "podnet-portmap", "hostports4"); ok {
			t.Errorf("inet podnet-portmap still exists after the last DEL")
		}
	}
	n.must(n.cnitool("del", network, a.path)) // DEL is idempotent

	// GC: cnitool v1.3.1 passes no valid attachments, so both pods go:
	// libcni DELs its cached attachments, then sends GC to every plugin.
	b := n.addChainPod(network, "1.1.0", 18081)
	c := n.addChainPod(network, "1.1.0", 18082)
	if b.ip == c.ip {
		t.Fatalf("both pods got %s", b.ip)
	}
	n.assertChainUp(network, b)
	n.assertChainUp(network, c)
	n.must(n.cnitool("gc", network, b.path))
	n.assertChainDown(network, b)
	n.assertChainDown(network, c)
	n.must(n.cnitool("status", network, b.path))
}

// cniVersion 1.0.0 is the newest podman (netavark's CNI mode) and older
// runtimes speak: the same chain through add, check and del.
func TestCNIToolFullChainV100(t *testing.T) {
	n := newNode(t)
	network := n.chainNet("1.0.0")
	p := n.addChainPod(network, "1.0.0", 18090)
	n.assertChainUp(network, p)
	n.must(n.runEnv(capArgs(p.hostPort), n.tools.cnitool, "check", network, p.path))
	n.must(n.runEnv(capArgs(p.hostPort), n.tools.cnitool, "del", network, p.path))
	n.assertChainDown(network, p)
}

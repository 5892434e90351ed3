package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

const (
	subnet = "10.77.0.0/24"
	bridge = "pne2e0"
	// libcniCache is where cnitool (which has no option for it) caches results.
	libcniCache = "/var/lib/cni"
)

var seq atomic.Int64

// node is one test's node: a network namespace the CNI client and therefore
// the plugins run in, a configuration directory with the test's networks,
// and the host-local data directory.
type node struct {
	t        *testing.T
	tools    toolset
	ns       string // path of the node netns
	confDir  string
	dataDir  string
	cacheDir string // libcni cache for `podnet cni`
	net      string // bridge + host-local network
	loNet    string // loopback-only network
}

func newNode(t *testing.T) *node {
	t.Helper()
	tl := needTools(t)
	_, nsPath := roottest.NewNS(t, "node")
	id := fmt.Sprintf("%d-%d", os.Getpid(), seq.Add(1))
	n := &node{
		t: t, tools: tl, ns: nsPath,
		confDir:  t.TempDir(),
		dataDir:  t.TempDir(),
		cacheDir: t.TempDir(),
		net:      "pne2e-" + id,
		loNet:    "pne2e-lo-" + id,
	}
	// cnitool always caches in /var/lib/cni: drop whatever this test's
	// networks left there, also when it failed half-way.
	t.Cleanup(func() {
		for _, netName := range []string{n.net, n.loNet} {
			files, _ := filepath.Glob(filepath.Join(libcniCache, "results", netName+"-*"))
			for _, f := range files {
				os.Remove(f)
			}
		}
	})
	n.writeConf(n.net, fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}`, n.net, bridge, n.dataDir, subnet))
	n.writeConf(n.loNet, fmt.Sprintf(`{"cniVersion": "1.1.0", "name": %q, "plugins": [{"type": "loopback"}]}`, n.loNet))
	return n
}

func (n *node) writeConf(name, body string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.confDir, name+".conflist"), []byte(body), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// run starts bin inside the node netns with the CNI environment and returns
// its stdout; stderr is part of the error.
func (n *node) run(bin string, args ...string) (string, error) {
	return n.runEnv(nil, bin, args...)
}

// runEnv is run with extra environment variables (e.g. CAP_ARGS).
func (n *node) runEnv(extra []string, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	env := []string{}
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case cniclient.EnvCNIArgs, cniclient.EnvCapabilityArgs, cniclient.EnvIfName, cniclient.EnvCNIPath, cniclient.EnvNetConfPath:
			continue
		}
		env = append(env, e)
	}
	cmd.Env = append(env, cniclient.EnvNetConfPath+"="+n.confDir, cniclient.EnvCNIPath+"="+n.tools.pluginDir)
	cmd.Env = append(cmd.Env, extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cniclient.RunIn(n.ns, cmd); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (n *node) cnitool(args ...string) (string, error) { return n.run(n.tools.cnitool, args...) }

// podnet runs `podnet cni` with its own libcni cache directory.
func (n *node) podnet(args ...string) (string, error) {
	return n.run(n.tools.podnet, append([]string{"cni", "--cache-dir", n.cacheDir}, args...)...)
}

func (n *node) must(out string, err error) string {
	n.t.Helper()
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// newPod makes a pod netns; lo stays down when loDown.
func newPod(t *testing.T, loDown bool) string {
	t.Helper()
	if !loDown {
		_, p := roottest.NewNS(t, "pod")
		return p
	}
	name := fmt.Sprintf("pnt-podlo-%d-%d", os.Getpid(), seq.Add(1))
	p, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return p
}

// handle is a netlink handle for the namespace at path.
func handle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// addrs returns the IPv4 addresses of ifname in the namespace at path, and
// whether the link exists at all.
func addrs(t *testing.T, path, ifname string) ([]netip.Prefix, bool) {
	t.Helper()
	h := handle(t, path)
	l, err := h.LinkByName(ifname)
	if err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return nil, false
		}
		t.Fatalf("link %s in %s: %v", ifname, path, err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, true
}

func linkExists(t *testing.T, path, name string) bool {
	t.Helper()
	_, err := handle(t, path).LinkByName(name)
	return err == nil
}

// parseResult reads the ADD result a client printed and returns its one
// IPv4 address.
func parseResult(t *testing.T, out string) netip.Prefix {
	t.Helper()
	r, err := current.NewResult([]byte(out))
	if err != nil {
		t.Fatalf("parse result %q: %v", out, err)
	}
	res, err := current.GetResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if res.CNIVersion != "1.1.0" {
		t.Errorf("result cniVersion %q, want 1.1.0", res.CNIVersion)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1: %s", len(res.IPs), out)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	ones, _ := res.IPs[0].Address.Mask.Size()
	p := netip.PrefixFrom(ip, ones)
	if !netip.MustParsePrefix(subnet).Contains(ip) || ones != 24 {
		t.Fatalf("result address %s not a /24 in %s", p, subnet)
	}
	return p
}

// reserved reports whether host-local holds a reservation file for ip
// (dataDir/<network>/<ip>).
func (n *node) reserved(ip netip.Addr) bool {
	_, err := os.Stat(filepath.Join(n.dataDir, n.net, ip.String()))
	return err == nil
}

// assertAttached checks that the pod has eth0 with want and the reservation
// exists.
func (n *node) assertAttached(pod string, want netip.Prefix) {
	n.t.Helper()
	got, ok := addrs(n.t, pod, "eth0")
	if !ok {
		n.t.Fatalf("pod %s has no eth0", pod)
	}
	found := false
	for _, p := range got {
		found = found || p == want
	}
	if !found {
		n.t.Errorf("pod %s eth0 addresses %v, want %s", pod, got, want)
	}
	if !n.reserved(want.Addr()) {
		n.t.Errorf("no host-local reservation for %s under %s", want.Addr(), filepath.Join(n.dataDir, n.net))
	}
}

func (n *node) assertDetached(pod string, ip netip.Addr) {
	n.t.Helper()
	if !n.podIfGone(pod, "eth0") {
		n.t.Errorf("pod %s still has eth0 %s after DEL", pod, reapWait)
	}
	if n.reserved(ip) {
		n.t.Errorf("host-local reservation for %s still exists", ip)
	}
}

// reapWait is how long a pod interface may outlive its DEL: the bridge
// plugin's DEL sets the veth down at once and leaves deleting the pair to a
// detached reaper process.
const reapWait = 5 * time.Second

// podIfGone waits up to reapWait for ifname to leave the pod's namespace.
func (n *node) podIfGone(pod, ifname string) bool {
	n.t.Helper()
	for deadline := time.Now().Add(reapWait); ; time.Sleep(20 * time.Millisecond) {
		if _, ok := addrs(n.t, pod, ifname); !ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func TestCNIToolAddCheckDelStatus(t *testing.T) {
	n := newNode(t)
	pod := newPod(t, false)

	ip := parseResult(t, n.must(n.cnitool("add", n.net, pod)))
	n.assertAttached(pod, ip)
	if !linkExists(t, n.ns, bridge) {
		t.Errorf("bridge %s not in the node netns", bridge)
	}
	if _, err := os.Stat(filepath.Join(libcniCache, "results", n.net+"-"+cniclient.DefaultContainerID(pod)+"-eth0")); err != nil {
		t.Errorf("cnitool's container ID is not cniclient.DefaultContainerID: %v", err)
	}

	n.must(n.cnitool("check", n.net, pod))
	// podnet cni derives the same container ID and shares cnitool's cache.
	n.must(n.run(n.tools.podnet, "cni", "check", n.net, pod))
	n.must(n.cnitool("status", n.net, pod))

	n.must(n.cnitool("del", n.net, pod))
	n.assertDetached(pod, ip.Addr())
	n.must(n.cnitool("del", n.net, pod)) // DEL is idempotent
}

// cnitool v1.3.1 gc passes no valid attachments: every cached attachment of
// the network is deleted, other networks' are kept.
func TestCNIToolGC(t *testing.T) {
	n := newNode(t)
	podA, podB, podLo := newPod(t, false), newPod(t, false), newPod(t, true)
	ipA := parseResult(t, n.must(n.cnitool("add", n.net, podA)))
	ipB := parseResult(t, n.must(n.cnitool("add", n.net, podB)))
	if ipA == ipB {
		t.Fatalf("both pods got %s", ipA)
	}
	n.must(n.cnitool("add", n.loNet, podLo))

	n.must(n.cnitool("gc", n.net, podA))
	n.assertDetached(podA, ipA.Addr())
	n.assertDetached(podB, ipB.Addr())
	// The loopback network's attachment survives a GC of the other network.
	n.must(n.cnitool("check", n.loNet, podLo))
	n.must(n.cnitool("del", n.loNet, podLo))
}

func TestCNIToolLoopback(t *testing.T) {
	n := newNode(t)
	pod := newPod(t, true)
	loUp := func() bool {
		l, err := handle(t, pod).LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Flags&net.FlagUp != 0
	}
	if loUp() {
		t.Fatal("fresh netns has lo up")
	}
	out := n.must(n.cnitool("add", n.loNet, pod))
	if !strings.Contains(out, "127.0.0.1/8") {
		t.Errorf("loopback result lacks 127.0.0.1/8: %s", out)
	}
	if !loUp() {
		t.Error("lo not up after ADD")
	}
	n.must(n.cnitool("check", n.loNet, pod))
	n.must(n.cnitool("status", n.loNet, pod))
	n.must(n.cnitool("del", n.loNet, pod))
	if loUp() {
		t.Error("lo still up after DEL")
	}
}

// podnet cni: add/check/status/del, and gc with --valid keeping one
// attachment while freeing a cached one (libcni DEL) and a leaked one that
// only the plugins' GC knows about.
func TestPodnetCNI(t *testing.T) {
	n := newNode(t)
	podA, podB, podC := newPod(t, false), newPod(t, false), newPod(t, false)

	ipA := parseResult(t, n.must(n.podnet("add", n.net, podA)))
	ipB := parseResult(t, n.must(n.podnet("add", n.net, podB)))
	ipC := parseResult(t, n.must(n.podnet("add", n.net, podC, "--container-id", "leaked-c")))
	for pod, ip := range map[string]netip.Prefix{podA: ipA, podB: ipB, podC: ipC} {
		n.assertAttached(pod, ip)
	}
	n.must(n.podnet("check", n.net, podA))
	if out := n.must(n.podnet("status", n.net)); strings.TrimSpace(out) != "ok" {
		t.Errorf("status printed %q, want ok", out)
	}

	// C's runtime lost its cache: only host-local's GC can free its address.
	cacheC := filepath.Join(n.cacheDir, "results", n.net+"-leaked-c-eth0")
	if err := os.Remove(cacheC); err != nil {
		t.Fatalf("remove C's cache entry: %v", err)
	}
	cidA := cniclient.DefaultContainerID(podA)
	n.must(n.podnet("gc", n.net, "--valid", cidA+":eth0"))
	n.assertAttached(podA, ipA)
	n.assertDetached(podB, ipB.Addr())
	if n.reserved(ipC.Addr()) {
		t.Errorf("GC kept the leaked reservation of %s", ipC.Addr())
	}
	n.must(n.podnet("check", n.net, podA))

	n.must(n.podnet("del", n.net, podA))
	n.assertDetached(podA, ipA.Addr())
	// Leftover of C (its veth) goes with its netns; DEL of it must still work.
	n.must(n.podnet("del", n.net, podC, "--container-id", "leaked-c"))
}

func TestPodnetCNIErrors(t *testing.T) {
	n := newNode(t)
	pod := newPod(t, false)
	if _, err := n.podnet("add", "no-such-net", pod); err == nil || !strings.Contains(err.Error(), "no-such-net") {
		t.Errorf("add of a missing network: err = %v, want one naming it", err)
	}
	n.writeConf("pne2e-bad", `{"cniVersion": "1.1.0", "name": "pne2e-bad", "plugins": [
	  {"type": "host-local", "ipam": {"type": "host-local", "dataDir": "`+n.dataDir+`", "ranges": [[{"subnet": "10.78.0.0/33"}]]}}]}`)
	_, err := n.podnet("add", "pne2e-bad", pod)
	if err == nil {
		t.Fatal("add with an invalid subnet succeeded")
	}
	if !strings.Contains(err.Error(), "CNI error code") {
		t.Errorf("error does not carry the CNI code: %v", err)
	}
	t.Logf("invalid subnet: %v", err)
}

// podnet cni --node-netns: podnet itself runs in the test's namespace and
// starts the plugins in the node's.
func TestPodnetCNINodeNetnsFlag(t *testing.T) {
	n := newNode(t)
	pod := newPod(t, false)
	// Not through n.run: this process is not in the node netns.
	podnet := func(args ...string) string {
		cmd := exec.Command(n.tools.podnet, append([]string{"cni", "--node-netns", n.ns, "--cache-dir", n.cacheDir,
			"--conf-dir", n.confDir, "--cni-path", n.tools.pluginDir}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("podnet cni %v: %v: %s", args, err, stderr)
		}
		return string(out)
	}
	ip := parseResult(t, podnet("add", n.net, pod))
	n.assertAttached(pod, ip)
	if !linkExists(t, n.ns, bridge) {
		t.Errorf("bridge %s not created in the node netns", bridge)
	}
	podnet("del", n.net, pod)
	n.assertDetached(pod, ip.Addr())
}

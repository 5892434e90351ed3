package tuning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
	"github.com/podnet/podnet/internal/sysctl"
)

// pod is a node namespace and a pod namespace joined by a veth pair (host0
// in the node, eth0 in the pod), as a main plugin would have left them, and
// the prevResult that plugin would have returned.
type pod struct {
	nodePath, podName, podPath string
	dataDir                    string
	prev                       map[string]any
	mac                        string
}

func newPod(t *testing.T) *pod {
	t.Helper()
	_, nodePath := roottest.NewNS(t, "tun-node")
	podName, podPath := roottest.NewNS(t, "tun-pod")
	p := &pod{nodePath: nodePath, podName: podName, podPath: podPath, dataDir: t.TempDir()}

	podNS, err := vnetns.GetFromPath(podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	roottest.In(t, nodePath, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "host0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNS))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		l, err := netlink.LinkByName("host0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR("10.99.0.1/24")}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	roottest.In(t, podPath, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR("10.99.0.2/24")}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		p.mac = l.Attrs().HardwareAddr.String()
		return netlink.RouteAdd(&netlink.Route{Dst: mustCIDR("0.0.0.0/0"), Gw: net.ParseIP("10.99.0.1"), LinkIndex: l.Attrs().Index})
	})
	p.prev = map[string]any{
		"cniVersion": "1.0.0",
		"interfaces": []any{
			map[string]any{"name": "host0", "mac": "0a:00:00:00:00:aa"},
			map[string]any{"name": "eth0", "mac": p.mac, "sandbox": podPath},
		},
		"ips":    []any{map[string]any{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 1}},
		"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}},
	}
	return p
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// args builds CmdArgs for container cid with the tuning fields in fields.
func (p *pod) args(t *testing.T, cid string, fields map[string]any) *skel.CmdArgs {
	t.Helper()
	conf := map[string]any{
		"cniVersion": "1.0.0", "name": "tunnet", "type": "tuning",
		"dataDir": p.dataDir, "prevResult": p.prev,
	}
	for k, v := range fields {
		conf[k] = v
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return &skel.CmdArgs{ContainerID: cid, Netns: p.podPath, IfName: "eth0", StdinData: b}
}

func (p *pod) statePath(cid string) string {
	return filepath.Join(p.dataDir, "tunnet", cid, "eth0.json")
}

type snapshot struct {
	somaxconn, rpFilter string
	mac                 string
	mtu, txqlen         int
	promisc, allmulti   bool
}

func (p *pod) snap(t *testing.T) snapshot {
	t.Helper()
	var s snapshot
	roottest.In(t, p.podPath, func() error {
		var err error
		if s.somaxconn, err = sysctl.Get("net/core/somaxconn"); err != nil {
			return err
		}
		if s.rpFilter, err = sysctl.Get("net/ipv4/conf/eth0/rp_filter"); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a := l.Attrs()
		s.mac, s.mtu, s.txqlen = a.HardwareAddr.String(), a.MTU, a.TxQLen
		s.promisc, s.allmulti = a.Promisc != 0, a.RawFlags&unix.IFF_ALLMULTI != 0
		return nil
	})
	return s
}

func other(v string) string {
	if v == "2" {
		return "0"
	}
	return "2"
}

func TestRootAddCheckDelRestores(t *testing.T) {
	p := newPod(t)
	orig := p.snap(t)
	rp := other(orig.rpFilter)
	const mac = "0a:58:0a:63:00:99"
	a := p.args(t, "c1", map[string]any{
		"sysctl":   map[string]string{"net.core.somaxconn": "1234", "net.ipv4.conf.IFNAME.rp_filter": rp},
		"mac":      mac,
		"mtu":      1400,
		"promisc":  true,
		"allmulti": !orig.allmulti,
		"txQLen":   321,
	})
	res, err := Plugin.Add(a)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r := res.(*current.Result)
	if r.Interfaces[1].Mac != mac || r.Interfaces[0].Mac != "0a:00:00:00:00:aa" {
		t.Errorf("result MACs: %s %s", r.Interfaces[0].Mac, r.Interfaces[1].Mac)
	}
	got := p.snap(t)
	want := snapshot{somaxconn: "1234", rpFilter: rp, mac: mac, mtu: 1400, txqlen: 321, promisc: true, allmulti: !orig.allmulti}
	if got != want {
		t.Fatalf("after ADD: %+v, want %+v", got, want)
	}
	info, err := os.Stat(p.statePath("c1"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", info, err)
	}
	if err := Plugin.Check(a); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	// Someone changes a tuned value: CHECK notices.
	roottest.In(t, p.podPath, func() error {
		l, _ := netlink.LinkByName("eth0")
		return netlink.LinkSetMTU(l, 1300)
	})
	if err := Plugin.Check(a); err == nil || !strings.Contains(err.Error(), "MTU 1300, configured 1400") {
		t.Errorf("CHECK after MTU change: %v", err)
	}
	roottest.In(t, p.podPath, func() error {
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.LinkSetMTU(l, 1400); err != nil {
			return err
		}
		return sysctl.Set("net/core/somaxconn", "99")
	})
	if err := Plugin.Check(a); err == nil || !strings.Contains(err.Error(), `net/core/somaxconn is "99", configured "1234"`) {
		t.Errorf("CHECK after sysctl change: %v", err)
	}

	if err := Plugin.Del(a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := p.snap(t); got != orig {
		t.Errorf("after DEL: %+v, want the originals %+v", got, orig)
	}
	if _, err := os.Stat(p.statePath("c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after DEL: %v", err)
	}
	if err := Plugin.Del(a); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

func TestRootRepeatedAddRestoresOldest(t *testing.T) {
	p := newPod(t)
	orig := p.snap(t)
	if _, err := Plugin.Add(p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1000"}, "mtu": 1400})); err != nil {
		t.Fatal(err)
	}
	a := p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "2000"}, "mtu": 1300, "txQLen": 5})
	if _, err := Plugin.Add(a); err != nil {
		t.Fatal(err)
	}
	if s := p.snap(t); s.somaxconn != "2000" || s.mtu != 1300 || s.txqlen != 5 {
		t.Fatalf("second ADD not applied: %+v", s)
	}
	if err := Plugin.Del(a); err != nil {
		t.Fatal(err)
	}
	if got := p.snap(t); got != orig {
		t.Errorf("after DEL: %+v, want %+v", got, orig)
	}
}

func TestRootDelAfterNetnsGone(t *testing.T) {
	p := newPod(t)
	a := p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1234"}, "mtu": 1400})
	if _, err := Plugin.Add(a); err != nil {
		t.Fatal(err)
	}
	if err := netns.Delete(p.podName); err != nil {
		t.Fatal(err)
	}
	if err := Plugin.Del(a); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if _, err := os.Stat(p.statePath("c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after DEL: %v", err)
	}
	a.Netns = ""
	if err := Plugin.Del(a); err != nil {
		t.Errorf("DEL without netns: %v", err)
	}
}

func TestRootDelAfterInterfaceGone(t *testing.T) {
	p := newPod(t)
	orig := p.snap(t)
	a := p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1234", "net.ipv4.conf.IFNAME.rp_filter": other(orig.rpFilter)}, "mtu": 1400})
	if _, err := Plugin.Add(a); err != nil {
		t.Fatal(err)
	}
	roottest.In(t, p.podPath, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if err := Plugin.Del(a); err != nil {
		t.Fatalf("DEL with eth0 gone: %v", err)
	}
	roottest.In(t, p.podPath, func() error {
		v, err := sysctl.Get("net/core/somaxconn")
		if err == nil && v != orig.somaxconn {
			err = fmt.Errorf("somaxconn %s, want %s", v, orig.somaxconn)
		}
		return err
	})
	if _, err := os.Stat(p.statePath("c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after DEL: %v", err)
	}
}

func TestRootGC(t *testing.T) {
	p := newPod(t)
	for _, cid := range []string{"keep", "stale"} {
		if _, err := Plugin.Add(p.args(t, cid, map[string]any{"txQLen": 100})); err != nil {
			t.Fatal(err)
		}
	}
	a := p.args(t, "", map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}}})
	a.Netns, a.IfName = "", ""
	if err := Plugin.GC(a); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, err := os.Stat(p.statePath("keep")); err != nil {
		t.Errorf("valid attachment's state: %v", err)
	}
	if _, err := os.Stat(p.statePath("stale")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale state after GC: %v", err)
	}
	// GC of a network that never had state is fine.
	a.StdinData = []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"other","type":"tuning","dataDir":%q}`, p.dataDir))
	if err := Plugin.GC(a); err != nil {
		t.Errorf("GC of an unknown network: %v", err)
	}
}

func TestRootFailedAddRollsBack(t *testing.T) {
	p := newPod(t)
	orig := p.snap(t)

	// A sysctl the kernel refuses, after one it accepted.
	a := p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1234", "net.ipv4.conf.IFNAME.rp_filter": "bogus"}})
	_, err := Plugin.Add(a)
	wantErr(t, err, 7, `"net.ipv4.conf.IFNAME.rp_filter"`, "refused")
	if got := p.snap(t); got != orig {
		t.Errorf("after failed ADD: %+v, want %+v", got, orig)
	}
	if _, err := os.Stat(p.statePath("c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after failed ADD: %v", err)
	}

	// A link attribute the kernel refuses (MTU below veth's minimum 68),
	// after sysctls and the MAC were changed.
	a = p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1234"}, "mac": "0a:58:0a:63:00:99", "promisc": true, "mtu": 60})
	_, err = Plugin.Add(a)
	wantErr(t, err, 7, `field "mtu"`, "set 60 on eth0")
	if got := p.snap(t); got != orig {
		t.Errorf("after failed ADD: %+v, want %+v", got, orig)
	}

	// A sysctl that does not exist fails before anything changes.
	a = p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1234", "net.ipv4.no_such_thing": "1"}})
	_, err = Plugin.Add(a)
	wantErr(t, err, 7, "does not exist")
	if got := p.snap(t); got != orig {
		t.Errorf("after failed ADD: %+v, want %+v", got, orig)
	}

	// A missing interface.
	a = p.args(t, "c1", map[string]any{"mtu": 1400})
	a.IfName = "nope0"
	_, err = Plugin.Add(a)
	wantErr(t, err, 999, "nope0")
}

func TestRootFailedReAddKeepsFirstState(t *testing.T) {
	p := newPod(t)
	orig := p.snap(t)
	a := p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "1000"}})
	if _, err := Plugin.Add(a); err != nil {
		t.Fatal(err)
	}
	_, err := Plugin.Add(p.args(t, "c1", map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "2000"}, "mtu": 60}))
	if err == nil {
		t.Fatal("want an error")
	}
	if s := p.snap(t); s.somaxconn != "1000" {
		t.Errorf("failed second ADD should leave the first ADD's value, got %s", s.somaxconn)
	}
	if err := Plugin.Del(a); err != nil {
		t.Fatal(err)
	}
	if got := p.snap(t); got != orig {
		t.Errorf("after DEL: %+v, want %+v", got, orig)
	}
}

// TestRootOldVersionThroughSkel runs ADD the way the binary does (the
// skel callbacks print the result in the config's version) with a 0.4.0
// config and prevResult.
func TestRootOldVersionThroughSkel(t *testing.T) {
	p := newPod(t)
	p.prev["cniVersion"] = "0.4.0"
	p.prev["ips"] = []any{map[string]any{"version": "4", "address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 1}}
	a := p.args(t, "c1", map[string]any{"cniVersion": "0.4.0", "mac": "0a:58:0a:63:00:42"})

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	err = Plugin.Funcs().Add(a)
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name, Mac string
		} `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.CNIVersion != "0.4.0" || len(res.Interfaces) != 2 || res.Interfaces[1].Mac != "0a:58:0a:63:00:42" {
		t.Errorf("result: %s", out)
	}
	if err := Plugin.Del(a); err != nil {
		t.Fatal(err)
	}
	if s := p.snap(t); s.mac != p.mac {
		t.Errorf("MAC after DEL %s, want %s", s.mac, p.mac)
	}
}

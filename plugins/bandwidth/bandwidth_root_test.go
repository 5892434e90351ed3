package bandwidth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
	"github.com/podnet/podnet/internal/tc"
)

// pod is a fabricated attachment: a veth between the node netns and a pod
// netns, with the prevResult a main plugin would have returned.
type pod struct {
	node, path, nsName string
	host               string // host veth name
	hostIP, podIP      net.IP
	prev               json.RawMessage
	cid                string
}

var podSeq int

// newPod makes a pod netns and a veth (host end in node) with 10.99.N.1/24
// on the host end and 10.99.N.2/24 on the pod's eth0.
func newPod(t *testing.T, node string) *pod {
	t.Helper()
	podSeq++
	n := podSeq
	nsName, path := roottest.NewNS(t, "bwpod")
	p := &pod{node: node, path: path, nsName: nsName, host: fmt.Sprintf("vbw%d", n),
		hostIP: net.IPv4(10, 99, byte(n), 1), podIP: net.IPv4(10, 99, byte(n), 2),
		cid: fmt.Sprintf("container-%d", n)}
	var hostMac, podMac string
	roottest.In(t, node, func() error {
		h, err := vnetns.GetFromPath(path)
		if err != nil {
			return err
		}
		defer h.Close()
		la := netlink.NewLinkAttrs()
		la.Name = p.host
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h))}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(p.host)
		if err != nil {
			return err
		}
		hostMac = l.Attrs().HardwareAddr.String()
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.hostIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	roottest.In(t, path, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		podMac = l.Attrs().HardwareAddr.String()
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.podIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	p.prev = json.RawMessage(fmt.Sprintf(`{"cniVersion":"1.0.0","interfaces":[{"name":%q,"mac":%q},{"name":"eth0","mac":%q,"sandbox":%q}],"ips":[{"address":"%s/24","interface":1}]}`,
		p.host, hostMac, podMac, path, p.podIP))
	return p
}

func (p *pod) args(network, extra string, prev json.RawMessage) *skel.CmdArgs {
	s := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"bandwidth"%s`, network, extra)
	if prev != nil {
		s += `,"prevResult":` + string(prev)
	}
	s += "}"
	return &skel.CmdArgs{ContainerID: p.cid, Netns: p.path, IfName: "eth0", StdinData: []byte(s)}
}

func inNode(t *testing.T, node string, fn func() error) error {
	t.Helper()
	var ferr error
	roottest.In(t, node, func() error { ferr = fn(); return nil })
	return ferr
}

func addOK(t *testing.T, node string, a *skel.CmdArgs) *current.Result {
	t.Helper()
	var res types.Result
	if err := inNode(t, node, func() (err error) { res, err = Plugin.Add(a); return err }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ifbsIn(t *testing.T, node string) map[string]netlink.Link {
	t.Helper()
	out := map[string]netlink.Link{}
	roottest.In(t, node, func() error {
		ls, err := tc.Ifbs()
		for _, l := range ls {
			out[l.Attrs().Name] = l
		}
		return err
	})
	return out
}

func hostIndex(t *testing.T, node, host string) (idx int) {
	t.Helper()
	roottest.In(t, node, func() error {
		l, err := netlink.LinkByName(host)
		if err == nil {
			idx = l.Attrs().Index
		}
		return err
	})
	return idx
}

const both = `,"ingressRate":30000000,"ingressBurst":1000000,"egressRate":20000000,"egressBurst":1000000`

func TestAddCheckDel(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	a := p.args("bwnet", both, p.prev)
	res := addOK(t, node, a)

	primary, _ := ifbNames("bwnet", p.cid, "eth0")
	if len(res.Interfaces) != 3 || res.Interfaces[2].Name != primary || res.Interfaces[2].Sandbox != "" || res.Interfaces[2].Mac == "" {
		t.Fatalf("result interfaces: %+v", res.Interfaces)
	}
	if len(res.IPs) != 1 || !res.IPs[0].Address.IP.Equal(p.podIP) {
		t.Errorf("prevResult IPs not passed through: %+v", res.IPs)
	}

	ifb, ok := ifbsIn(t, node)[primary]
	if !ok {
		t.Fatalf("ifb %s missing", primary)
	}
	if ifb.Attrs().Alias != "podnet-bandwidth net=bwnet cid="+p.cid+" if=eth0" || ifb.Attrs().MTU != 1500 || ifb.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("ifb attrs: alias %q mtu %d flags %v", ifb.Attrs().Alias, ifb.Attrs().MTU, ifb.Attrs().Flags)
	}
	hidx := hostIndex(t, node, p.host)
	roottest.In(t, node, func() error {
		tick := tc.TicksPerUsec()
		in, _ := tc.Params(30_000_000, 1_000_000, tick)
		eg, _ := tc.Params(20_000_000, 1_000_000, tick)
		got, ok, err := tc.RootTBF(hidx)
		if err != nil || !ok || !in.Equal(got) {
			t.Errorf("host veth tbf = %v %v %v, want %v", got, ok, err, in)
		}
		got, ok, err = tc.RootTBF(ifb.Attrs().Index)
		if err != nil || !ok || !eg.Equal(got) {
			t.Errorf("ifb tbf = %v %v %v, want %v", got, ok, err, eg)
		}
		to, ok, err := tc.Redirect(hidx)
		if err != nil || !ok || to != ifb.Attrs().Index {
			t.Errorf("redirect = %d %v %v, want ifindex %d", to, ok, err, ifb.Attrs().Index)
		}
		return nil
	})

	// CHECK against the ADD result passes, and fails once shaping is damaged.
	resJSON, _ := json.Marshal(res)
	ca := p.args("bwnet", both, resJSON)
	if err := inNode(t, node, func() error { return Plugin.Check(ca) }); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := inNode(t, node, func() error {
		return Plugin.Check(p.args("bwnet", strings.Replace(both, "30000000", "40000000", 1), resJSON))
	}); err == nil || !strings.Contains(err.Error(), "want") {
		t.Errorf("CHECK with another rate: %v", err)
	}
	roottest.In(t, node, func() error { return tc.DelRedirect(hidx) })
	if err := inNode(t, node, func() error { return Plugin.Check(ca) }); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("CHECK without redirect: %v", err)
	}
	roottest.In(t, node, func() error { return tc.DelRootQdisc(hidx) })
	if err := inNode(t, node, func() error { return Plugin.Check(ca) }); err == nil || !strings.Contains(err.Error(), "no tbf") {
		t.Errorf("CHECK without tbf: %v", err)
	}

	// DEL removes the ifb; twice is fine.
	for i := range 2 {
		if err := inNode(t, node, func() error { return Plugin.Del(ca) }); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		if _, ok := ifbsIn(t, node)[primary]; ok {
			t.Fatalf("ifb still there after DEL %d", i)
		}
	}
}

func TestAddIdempotentAndPassThrough(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	// No limits: prevResult unchanged, nothing made.
	res := addOK(t, node, p.args("bwnet", ``, p.prev))
	if len(res.Interfaces) != 2 || len(ifbsIn(t, node)) != 0 {
		t.Fatalf("unshaped ADD changed things: %+v", res.Interfaces)
	}
	// Ingress only: no ifb.
	res = addOK(t, node, p.args("bwnet", `,"ingressRate":8000000,"ingressBurst":80000`, p.prev))
	if len(res.Interfaces) != 2 || len(ifbsIn(t, node)) != 0 {
		t.Fatalf("ingress-only ADD made an ifb: %+v", res.Interfaces)
	}
	// runtimeConfig egress, ADD twice (a runtime retry): one ifb.
	a := p.args("bwnet", `,"runtimeConfig":{"bandwidth":{"egressRate":8000000,"egressBurst":80000}}`, p.prev)
	addOK(t, node, a)
	res = addOK(t, node, a)
	if ifbs := ifbsIn(t, node); len(ifbs) != 1 || ifbs[res.Interfaces[2].Name] == nil {
		t.Fatalf("after two ADDs: %v, result %+v", ifbs, res.Interfaces)
	}
	resJSON, _ := json.Marshal(res)
	if err := inNode(t, node, func() error {
		return Plugin.Check(p.args("bwnet", `,"runtimeConfig":{"bandwidth":{"egressRate":8000000,"egressBurst":80000}}`, resJSON))
	}); err != nil {
		t.Fatalf("CHECK after re-ADD: %v", err)
	}
}

func TestAddErrors(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	var te *types.Error
	err := inNode(t, node, func() error { _, err := Plugin.Add(p.args("bwnet", both, nil)); return err })
	if !errors.As(err, &te) || te.Code != 7 || !strings.Contains(te.Msg, "prevResult") {
		t.Errorf("ADD without prevResult: %v", err)
	}
	// prevResult that does not list the host veth.
	bad := json.RawMessage(`{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"` + p.path + `"}]}`)
	err = inNode(t, node, func() error { _, err := Plugin.Add(p.args("bwnet", both, bad)); return err })
	if err == nil || !strings.Contains(err.Error(), "not among prevResult's host interfaces") {
		t.Errorf("ADD with a prevResult lacking the host veth: %v", err)
	}
	if n := len(ifbsIn(t, node)); n != 0 {
		t.Errorf("%d ifbs left", n)
	}
}

func TestFailedAddRollsBack(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	testHookAfterIfb = func() error { return errors.New("injected failure") }
	defer func() { testHookAfterIfb = nil }()
	err := inNode(t, node, func() error { _, err := Plugin.Add(p.args("bwnet", both, p.prev)); return err })
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("ADD: %v", err)
	}
	if ifbs := ifbsIn(t, node); len(ifbs) != 0 {
		t.Errorf("ifbs left after failed ADD: %v", ifbs)
	}
	hidx := hostIndex(t, node, p.host)
	roottest.In(t, node, func() error {
		if _, ok, err := tc.RootTBF(hidx); ok || err != nil {
			t.Errorf("tbf left on host veth (%v)", err)
		}
		if _, ok, err := tc.Redirect(hidx); ok || err != nil {
			t.Errorf("redirect left on host veth (%v)", err)
		}
		return nil
	})
}

func TestDelWithoutNetnsOrPrevResult(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	res := addOK(t, node, p.args("bwnet", both, p.prev))
	ifbName := res.Interfaces[2].Name
	// The pod's netns goes away (taking the veth with it) before DEL.
	if err := netns.Delete(p.nsName); err != nil {
		t.Fatal(err)
	}
	a := p.args("bwnet", both, nil)
	a.Netns = ""
	if err := inNode(t, node, func() error { return Plugin.Del(a) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, ok := ifbsIn(t, node)[ifbName]; ok {
		t.Fatal("ifb survived DEL")
	}
	a.Netns = p.path // a path that no longer exists
	if err := inNode(t, node, func() error { return Plugin.Del(a) }); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
}

func TestGC(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	keep, stale, other := newPod(t, node), newPod(t, node), newPod(t, node)
	eg := `,"egressRate":8000000,"egressBurst":80000`
	rk := addOK(t, node, keep.args("gcnet", eg, keep.prev))
	rs := addOK(t, node, stale.args("gcnet", eg, stale.prev))
	ro := addOK(t, node, other.args("othernet", eg, other.prev))
	// An unlabelled bwp ifb (as the reference plugin makes) is not ours to collect.
	roottest.In(t, node, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "bwpforeign0000"
		return netlink.LinkAdd(&netlink.Ifb{LinkAttrs: la})
	})
	gcArgs := &skel.CmdArgs{StdinData: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"gcnet","type":"bandwidth","cni.dev/valid-attachments":[{"containerID":%q,"ifname":"eth0"},{"containerID":"gone","ifname":"eth0"}]}`, keep.cid))}
	if err := inNode(t, node, func() error { return Plugin.GC(gcArgs) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	ifbs := ifbsIn(t, node)
	for _, want := range []string{rk.Interfaces[2].Name, ro.Interfaces[2].Name, "bwpforeign0000"} {
		if ifbs[want] == nil {
			t.Errorf("GC removed %s", want)
		}
	}
	if ifbs[rs.Interfaces[2].Name] != nil {
		t.Errorf("GC kept the stale %s", rs.Interfaces[2].Name)
	}
}

func TestStatus(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	a := &skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.1.0","name":"n","type":"bandwidth"}`)}
	if err := inNode(t, node, func() error { return Plugin.Status(a) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	if n := len(ifbsIn(t, node)); n != 0 {
		t.Errorf("STATUS left %d ifbs", n)
	}
}

// TestRates measures real TCP throughput with iperf3 through the shaping:
// pod→node (egress, via the ifb) and node→pod (ingress, host veth tbf).
func TestRates(t *testing.T) {
	roottest.Require(t)
	iperf, err := exec.LookPath("iperf3")
	if err != nil {
		t.Skip("iperf3 not installed (apt-get install -y iperf3)")
	}
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	const ingress, egress = 30_000_000, 20_000_000
	addOK(t, node, p.args("bwnet", fmt.Sprintf(`,"ingressRate":%d,"ingressBurst":1000000,"egressRate":%d,"egressBurst":1000000`, ingress, egress), p.prev))

	srv := exec.Command(iperf, "-s", "-B", p.hostIP.String(), "-p", "5201")
	roottest.In(t, node, srv.Start)
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	measure := func(reverse bool) float64 {
		argv := []string{"-c", p.hostIP.String(), "-p", "5201", "-t", "3", "-J"}
		if reverse {
			argv = append(argv, "-R")
		}
		var out bytes.Buffer
		var lastErr error
		for range 30 {
			out.Reset()
			cl := exec.Command(iperf, argv...)
			cl.Stdout = &out
			roottest.In(t, p.path, cl.Start)
			runErr := cl.Wait()
			var r struct {
				Error string `json:"error"`
				End   struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			jerr := json.Unmarshal(out.Bytes(), &r)
			switch {
			case runErr == nil && jerr == nil && r.Error == "" && r.End.SumReceived.BitsPerSecond > 0:
				return r.End.SumReceived.BitsPerSecond
			case r.Error != "":
				lastErr = errors.New(r.Error)
			default:
				lastErr = errors.Join(runErr, jerr, errors.New("no bits_per_second in the output"))
			}
			t.Logf("iperf3 retry: %v", lastErr)
			time.Sleep(200 * time.Millisecond) // most likely the server is not listening yet
		}
		t.Fatalf("iperf3 %v: %v\n%s", argv, lastErr, out.String())
		return 0
	}
	for _, c := range []struct {
		dir     string
		reverse bool
		want    float64
	}{{"egress (pod→node)", false, egress}, {"ingress (node→pod)", true, ingress}} {
		got := measure(c.reverse)
		t.Logf("%s: %.2f Mbit/s measured, %.0f Mbit/s configured (%.1f%%)", c.dir, got/1e6, c.want/1e6, 100*got/c.want)
		if got < 0.85*c.want || got > 1.15*c.want {
			t.Errorf("%s: %.2f Mbit/s is not within 15%% of %.0f Mbit/s", c.dir, got/1e6, c.want/1e6)
		}
	}
}

// An ifb of the primary name already there (made by the reference plugin,
// unlabelled): ADD uses the alternate name; DEL removes both.
func TestNameTaken(t *testing.T) {
	_, node := roottest.NewNS(t, "bwnode")
	p := newPod(t, node)
	primary, alternate := ifbNames("bwnet", p.cid, "eth0")
	roottest.In(t, node, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = primary
		return netlink.LinkAdd(&netlink.Ifb{LinkAttrs: la})
	})
	res := addOK(t, node, p.args("bwnet", both, p.prev))
	if res.Interfaces[2].Name != alternate {
		t.Fatalf("ifb %s, want the alternate %s", res.Interfaces[2].Name, alternate)
	}
	resJSON, _ := json.Marshal(res)
	if err := inNode(t, node, func() error { return Plugin.Check(p.args("bwnet", both, resJSON)) }); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := inNode(t, node, func() error { return Plugin.Del(p.args("bwnet", both, nil)) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if ifbs := ifbsIn(t, node); len(ifbs) != 0 {
		t.Errorf("left after DEL: %v", ifbs)
	}
}

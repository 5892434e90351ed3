package firewall

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/sysctl"
	"github.com/podnet/podnet/plugins/bridge"
)

// lab is a node namespace where the bridge and firewall plugins run, and
// pods attached by the real bridge plugin (host-local IPAM in a temp dir).
type lab struct {
	t *testing.T
	e *nxtest.Env
}

type pod struct {
	id, path, network string
	res               *current.Result
}

func newLab(t *testing.T) *lab {
	e := nxtest.New(t, bridge.Plugin)
	return &lab{t: t, e: e}
}

// pod attaches a new pod namespace to bridge br of network (subnet, and
// subnet6 when set) with the real bridge plugin.
func (l *lab) pod(id, network, br, subnet, subnet6 string) *pod {
	l.t.Helper()
	conf := l.e.Conf("1.1.0", network, fmt.Sprintf(`"type":"bridge","bridge":%q,"isDefaultGateway":true`, br), "", subnet, subnet6)
	p := &pod{id: id, path: l.e.Pod(), network: network}
	p.res = l.e.MustAdd(l.e.Args(conf, id, p.path, "eth0"))
	return p
}

func (p *pod) ip4() net.IP { return p.res.IPs[0].Address.IP }

// fwConf is the firewall's config for p with extra fields, with p's
// bridge result as prevResult.
func (l *lab) fwConf(p *pod, fields string) []byte {
	l.t.Helper()
	if fields != "" {
		fields = "," + fields
	}
	c := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"firewall"%s}`, p.network, fields))
	return nxtest.WithPrev(l.t, c, p.res)
}

func (l *lab) args(p *pod, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: p.id, Netns: p.path, IfName: "eth0", StdinData: conf}
}

func (l *lab) inNode(fn func() error) error { return netns.Do(l.e.Node, fn) }

func (l *lab) fwAdd(p *pod, fields string) *skel.CmdArgs {
	l.t.Helper()
	a := l.args(p, l.fwConf(p, fields))
	var res types.Result
	if err := l.inNode(func() (err error) { res, err = Plugin.Add(a); return err }); err != nil {
		l.t.Fatalf("firewall ADD %s: %v", p.id, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) != len(p.res.IPs) || len(r.Interfaces) != len(p.res.Interfaces) {
		l.t.Fatalf("firewall ADD %s must pass prevResult through: %+v %v", p.id, r, err)
	}
	return a
}

func (l *lab) verb(f func(*skel.CmdArgs) error, a *skel.CmdArgs) error {
	return l.inNode(func() error { return f(a) })
}

// elements reads the table in the node.
func (l *lab) elements() []Element {
	l.t.Helper()
	var els []Element
	var ok bool
	if err := l.inNode(func() (err error) { els, ok, err = Read(); return err }); err != nil {
		l.t.Fatal(err)
	}
	if !ok && len(els) > 0 {
		l.t.Errorf("elements present but the forward chain does not hold podnet's rules")
	}
	return els
}

func (l *lab) wantElements(n int) {
	l.t.Helper()
	if els := l.elements(); len(els) != n {
		l.t.Errorf("table holds %d elements, want %d:\n%s", len(els), n, RenderElements(els))
	}
}

// dropPolicy installs, in the node, a test-owned table whose forward chain
// drops everything except packets the firewall plugin accepted (its mark),
// like a host whose FORWARD policy is DROP and honours podnet's mark.
func (l *lab) dropPolicy() {
	l.t.Helper()
	err := l.inNode(func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		t := cc.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "pnt-test-policy"})
		drop := nftables.ChainPolicyDrop
		ch := cc.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		cc.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(AcceptMark), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
		return cc.Flush()
	})
	if err != nil {
		l.t.Fatalf("install drop policy: %v", err)
	}
}

const probeTimeout = 700 * time.Millisecond

func ping(from string, to net.IP) error {
	var err error
	for try := 0; try < 2; try++ { // the first echo may be spent on ARP/ND
		if _, err = probe.Ping(from, to, probeTimeout); err == nil {
			return nil
		}
	}
	return err
}

func (l *lab) reach(from *pod, to net.IP) {
	l.t.Helper()
	if err := ping(from.path, to); err != nil {
		l.t.Errorf("%s -> %s: want delivered, got %v", from.id, to, err)
	}
}

func (l *lab) noReach(from *pod, to net.IP) {
	l.t.Helper()
	if _, err := probe.Ping(from.path, to, probeTimeout); err == nil {
		l.t.Errorf("%s -> %s: want dropped, got a reply", from.id, to)
	}
}

func (l *lab) tcp(from, to *pod, want bool) {
	l.t.Helper()
	ln, err := probe.Listen(to.path, "0.0.0.0:7070")
	if err != nil {
		l.t.Fatal(err)
	}
	defer ln.Close()
	seen, err := probe.Exchange(from.path, "tcp", net.JoinHostPort(to.ip4().String(), "7070"), probeTimeout)
	switch {
	case want && err != nil:
		l.t.Errorf("tcp %s -> %s: %v", from.id, to.id, err)
	case want && seen != from.ip4().String():
		l.t.Errorf("tcp %s -> %s: server saw %s", from.id, to.id, seen)
	case !want && err == nil:
		l.t.Errorf("tcp %s -> %s: want dropped, got through", from.id, to.id)
	}
}

func TestRootAcceptThenDel(t *testing.T) {
	l := newLab(t)
	a := l.pod("ctr-a", "net-a", "br-a", "10.31.0.0/24", "fd31::/64")
	b := l.pod("ctr-b", "net-b", "br-b", "10.32.0.0/24", "fd32::/64")
	b6 := b.res.IPs[1].Address.IP
	l.reach(a, b.ip4()) // routed via the node before any policy
	l.reach(a, b6)
	l.dropPolicy()
	l.noReach(a, b.ip4())
	l.noReach(a, b6)

	aArgs := l.fwAdd(a, `"backend":"iptables","iptablesAdminChainName":"CNI-ADMIN"`)
	bArgs := l.fwAdd(b, "")
	l.wantElements(4) // pods4 and pods6 for each
	l.reach(a, b.ip4())
	l.reach(b, a.ip4())
	l.reach(a, b6)
	l.tcp(a, b, true)
	l.tcp(b, a, true)
	l.reach(a, net.ParseIP("10.31.0.1")) // the node (input, not forwarded)
	l.reach(b, net.ParseIP("10.32.0.1"))
	for _, x := range []*skel.CmdArgs{aArgs, bArgs} {
		if err := l.verb(Plugin.Check, x); err != nil {
			t.Errorf("CHECK %s: %v", x.ContainerID, err)
		}
	}
	// A repeated ADD changes nothing.
	l.fwAdd(a, `"backend":"iptables"`)
	l.wantElements(4)

	// An operator's rule in the admin chain decides before the accepts.
	var handle uint64
	err := l.inNode(func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		tb := tableRef()
		admin := &nftables.Chain{Name: chainAdmin, Table: tb}
		cc.AddRule(&nftables.Rule{Table: tb, Chain: admin, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}})
		if err := cc.Flush(); err != nil {
			return err
		}
		rs, err := cc.GetRules(tb, admin)
		if err != nil || len(rs) != 1 {
			return fmt.Errorf("admin chain: %d rules, %v", len(rs), err)
		}
		handle = rs[0].Handle
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l.tcp(b, a, false)
	l.inNode(func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		tb := tableRef()
		cc.DelRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: chainAdmin, Table: tb}, Handle: handle})
		return cc.Flush()
	})
	l.tcp(b, a, true)

	// DEL a: a's traffic is no longer accepted; b may still open
	// connections to a (replies to b are accepted).
	if err := l.verb(Plugin.Del, aArgs); err != nil {
		t.Fatalf("DEL a: %v", err)
	}
	l.wantElements(2)
	// (a's earlier echo flow to b is established, and replies to b are
	// accepted, so a new connection is the test.)
	l.tcp(a, b, false)
	l.reach(b, a.ip4())
	l.tcp(b, a, true)
	if err := l.verb(Plugin.Check, aArgs); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("CHECK after DEL: %v", err)
	}
	if err := l.verb(Plugin.Del, aArgs); err != nil {
		t.Errorf("second DEL: %v", err)
	}

	// DEL b without netns and without prevResult.
	bare := &skel.CmdArgs{ContainerID: "ctr-b", IfName: "eth0",
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"net-b","type":"firewall"}`)}
	if err := l.verb(Plugin.Del, bare); err != nil {
		t.Fatalf("DEL b without netns/prevResult: %v", err)
	}
	l.wantElements(0)
	l.noReach(b, a.ip4())
	l.noReach(a, b.ip4())
	if err := l.verb(Plugin.Del, bare); err != nil {
		t.Errorf("second DEL b: %v", err)
	}
	// The skeleton stays (like the reference's chains); no element does.
	var ok bool
	l.inNode(func() (err error) { _, ok, err = Read(); return err })
	if !ok {
		t.Errorf("forward chain lost its rules")
	}
	if err := l.verb(Plugin.Status, bare); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

func TestRootSameBridge(t *testing.T) {
	l := newLab(t)
	a1 := l.pod("ctr-a1", "net-a", "br-a", "10.41.0.0/24", "fd41::/64")
	a2 := l.pod("ctr-a2", "net-a", "br-a", "10.41.0.0/24", "fd41::/64")
	b1 := l.pod("ctr-b1", "net-b", "br-b", "10.42.0.0/24", "fd42::/64")
	c1 := l.pod("ctr-c1", "net-c", "br-c", "10.43.0.0/24", "")
	for _, p := range []*pod{a1, a2, b1} {
		l.fwAdd(p, `"ingressPolicy":"same-bridge"`)
	}
	l.fwAdd(c1, `"ingressPolicy":"open"`)
	l.wantElements(3*2*3 + 1) // (pods, iso, home) x (v4, v6) x 3 pods, + c1

	l.noReach(a1, b1.ip4())
	l.noReach(b1, a1.ip4())
	l.noReach(a1, b1.res.IPs[1].Address.IP) // IPv6 too
	l.tcp(b1, a1, false)
	l.reach(a1, a2.ip4())
	l.reach(a2, a1.res.IPs[1].Address.IP)
	// Bridges without an isolating policy are not cut off, either way
	// (the reference isolates only bridges that have the policy).
	l.reach(c1, a1.ip4())
	l.reach(a1, c1.ip4())
	l.tcp(c1, b1, true)

	// Without b1's elements, b1 is an ordinary neighbour again.
	bArgs := l.args(b1, l.fwConf(b1, `"ingressPolicy":"same-bridge"`))
	if err := l.verb(Plugin.Check, bArgs); err != nil {
		t.Errorf("CHECK b1: %v", err)
	}
	if err := l.verb(Plugin.Del, bArgs); err != nil {
		t.Fatal(err)
	}
	l.reach(a1, b1.ip4())
	l.reach(b1, a1.ip4())
}

// TestRootIsolated needs br_netfilter: bridged traffic between two pods of
// one bridge only meets the inet forward hook when bridge-nf-call-iptables
// is on (per netns; set in the test's node namespace).
func TestRootIsolated(t *testing.T) {
	l := newLab(t)
	a1 := l.pod("ctr-a1", "net-a", "br-a", "10.51.0.0/24", "")
	a2 := l.pod("ctr-a2", "net-a", "br-a", "10.51.0.0/24", "")
	b1 := l.pod("ctr-b1", "net-b", "br-b", "10.52.0.0/24", "")
	l.reach(a1, a2.ip4())
	err := l.inNode(func() error {
		if _, err := os.Stat(sysctl.Path("net/bridge/bridge-nf-call-iptables")); err != nil {
			return err
		}
		return sysctl.Set("net/bridge/bridge-nf-call-iptables", "1")
	})
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("br_netfilter is not loaded: net.bridge.bridge-nf-call-iptables does not exist")
	}
	if err != nil {
		t.Fatal(err)
	}
	l.reach(a1, a2.ip4())
	l.fwAdd(a1, `"ingressPolicy":"isolated"`)
	a2Args := l.fwAdd(a2, `"ingressPolicy":"isolated"`)
	l.fwAdd(b1, `"ingressPolicy":"same-bridge"`)
	l.noReach(a1, a2.ip4())
	l.noReach(a2, a1.ip4())
	l.noReach(a1, b1.ip4())
	l.noReach(b1, a2.ip4())
	if err := l.verb(Plugin.Check, a2Args); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := l.verb(Plugin.Del, a2Args); err != nil {
		t.Fatal(err)
	}
	l.wantElements(4 + 3)
	// a2 is gone from the table: b1 reaches it again, but a1 and a2 still
	// cannot talk: a1 drops whatever comes to it from its own bridge,
	// replies included (stateless, like the reference's -i br -o br DROP).
	l.reach(b1, a2.ip4())
	l.noReach(a2, a1.ip4())
	l.noReach(a1, a2.ip4())
}

// fakeArgs is an attachment with a made-up prevResult: the firewall needs
// no pod to program its elements.
func fakeArgs(t *testing.T, network, id, ip, fields string) *skel.CmdArgs {
	prev := map[string]any{"cniVersion": "1.1.0",
		"interfaces": []any{map[string]any{"name": "br-x"}},
		"ips":        []any{map[string]any{"address": ip}}}
	conf := map[string]any{"cniVersion": "1.1.0", "name": network, "type": "firewall", "prevResult": prev}
	if fields != "" {
		var extra map[string]any
		if err := json.Unmarshal([]byte("{"+fields+"}"), &extra); err != nil {
			t.Fatal(err)
		}
		for k, v := range extra {
			conf[k] = v
		}
	}
	b, _ := json.Marshal(conf)
	return &skel.CmdArgs{ContainerID: id, IfName: "eth0", Netns: "/nonexistent", StdinData: b}
}

func TestRootGCAndRepair(t *testing.T) {
	l := newLab(t)
	add := func(a *skel.CmdArgs) {
		t.Helper()
		if err := l.inNode(func() error { _, err := Plugin.Add(a); return err }); err != nil {
			t.Fatalf("ADD %s: %v", a.ContainerID, err)
		}
	}
	c1 := fakeArgs(t, "net1", "c1", "10.61.0.2/24", `"ingressPolicy":"isolated"`)
	c2 := fakeArgs(t, "net1", "c2", "10.61.0.3/24", "")
	c3 := fakeArgs(t, "net1", "c3", "fd61::3/64", `"ingressPolicy":"same-bridge"`)
	o1 := fakeArgs(t, "net2", "c2", "10.62.0.2/24", "")
	for _, a := range []*skel.CmdArgs{c1, c2, c3, o1} {
		add(a)
	}
	l.wantElements(4 + 1 + 3 + 1)

	gcArgs := &skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"firewall",
		"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c3","ifname":"eth0"}]}`)}
	if err := l.verb(Plugin.GC, gcArgs); err != nil {
		t.Fatalf("GC: %v", err)
	}
	l.wantElements(4 + 3 + 1) // c2 of net1 gone; c2 of net2 kept
	for _, a := range []*skel.CmdArgs{c1, c3, o1} {
		if err := l.verb(Plugin.Check, a); err != nil {
			t.Errorf("CHECK %s after GC: %v", a.ContainerID, err)
		}
	}
	if err := l.verb(Plugin.Check, c2); err == nil {
		t.Errorf("CHECK c2 after GC: want an error")
	}

	// The address of c2 is reused by c4 without a DEL of c2 (say c2's DEL
	// was lost): the element changes owner, and c2's late DEL leaves it.
	add(c2)
	c4 := fakeArgs(t, "net1", "c4", "10.61.0.3/24", "")
	add(c4)
	l.wantElements(4 + 3 + 1 + 1)
	if err := l.verb(Plugin.Del, c2); err != nil {
		t.Fatal(err)
	}
	if err := l.verb(Plugin.Check, c4); err != nil {
		t.Errorf("CHECK c4 after c2's late DEL: %v", err)
	}

	// A repeated ADD with another address replaces the attachment's
	// elements.
	add(fakeArgs(t, "net1", "c4", "10.61.0.9/24", ""))
	if err := l.verb(Plugin.Check, fakeArgs(t, "net1", "c4", "10.61.0.9/24", "")); err != nil {
		t.Errorf("CHECK c4 with its new address: %v", err)
	}
	l.wantElements(4 + 3 + 1 + 1)

	// Someone deletes podnet's rules: CHECK says so, the next ADD restores
	// them, and the operator's admin chain rules survive.
	err := l.inNode(func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		tb := tableRef()
		cc.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: chainAdmin, Table: tb},
			Exprs: []expr.Any{&expr.Counter{}}})
		cc.FlushChain(&nftables.Chain{Name: chainForward, Table: tb})
		return cc.Flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.verb(Plugin.Check, c1); err == nil || !strings.Contains(err.Error(), "rules") {
		t.Errorf("CHECK with the rules gone: %v", err)
	}
	add(c1)
	if err := l.verb(Plugin.Check, c1); err != nil {
		t.Errorf("CHECK after the repairing ADD: %v", err)
	}
	l.inNode(func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		tb := tableRef()
		rs, err := cc.GetRules(tb, &nftables.Chain{Name: chainAdmin, Table: tb})
		if err != nil || len(rs) != 1 {
			t.Errorf("admin chain: %d rules, %v", len(rs), err)
		}
		return nil
	})
}

// TestRootParallel races ADDs on a node without the table (each creates
// the skeleton), then DELs and a GC, and wants exactly one copy of the
// rules and every element accounted for.
func TestRootParallel(t *testing.T) {
	l := newLab(t)
	const n = 12
	var list []*skel.CmdArgs
	for i := 0; i < n; i++ {
		list = append(list, fakeArgs(t, "net1", fmt.Sprintf("c%d", i), fmt.Sprintf("10.71.0.%d/24", i+2), `"ingressPolicy":"same-bridge"`))
	}
	run := func(verb func(*skel.CmdArgs) error) {
		errs := make(chan error, n)
		for _, a := range list {
			go func() { errs <- l.verb(verb, a) }()
		}
		for range list {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	run(func(a *skel.CmdArgs) error { _, err := Plugin.Add(a); return err })
	l.wantElements(3 * n)
	var ok bool
	var rules int
	l.inNode(func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		rs, err := cc.GetRules(tableRef(), &nftables.Chain{Name: chainForward, Table: tableRef()})
		rules = len(rs)
		_, ok, _ = Read()
		return err
	})
	if !ok || rules != len(forwardRules()) {
		t.Errorf("forward chain has %d rules (ok=%v), want %d", rules, ok, len(forwardRules()))
	}
	for _, a := range list {
		if err := l.verb(Plugin.Check, a); err != nil {
			t.Errorf("CHECK %s: %v", a.ContainerID, err)
		}
	}
	list = list[:n/2]
	run(Plugin.Del)
	l.wantElements(3 * n / 2)
	if err := l.verb(Plugin.GC, &skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"firewall"}`)}); err != nil {
		t.Fatal(err)
	}
	l.wantElements(0)
}

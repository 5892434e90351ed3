package portmap

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/roottest"
	"github.com/podnet/podnet/internal/sysctl"
	"github.com/podnet/podnet/plugins/bridge"
)

// Addresses of the "other host" link between the node and the client.
const (
	nodeAddr4   = "192.168.77.1"
	clientAddr4 = "192.168.77.2"
	nodeAddr6   = "fd77::1"
	clientAddr6 = "fd77::2"
)

// lab is a node namespace with a bridge network, a client namespace linked
// to it by a veth, and helpers to run portmap in the node.
type lab struct {
	t       *testing.T
	e       *nxtest.Env // bridge plugin env: Node, DataDir
	client  string
	pmDir   string
	network string
	brConf  []byte
}

func newLab(t *testing.T, network, subnet, subnet6 string) *lab {
	t.Helper()
	e := nxtest.New(t, bridge.Plugin)
	_, client := roottest.NewNS(t, "client")
	l := &lab{t: t, e: e, client: client, pmDir: t.TempDir(), network: network}
	l.brConf = e.Conf("1.1.0", network, `"type":"bridge","bridge":"br0","isDefaultGateway":true,"hairpinMode":true`, "", subnet, subnet6)

	// node eth-c <-> client eth0
	roottest.In(t, e.Node, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth-c"}, PeerName: "eth0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		h, err := vns.GetFromPath(client)
		if err != nil {
			return err
		}
		defer h.Close()
		if err := netlink.LinkSetNsFd(peer, int(h)); err != nil {
			return err
		}
		return upWithAddrs("eth-c", nodeAddr4+"/24", nodeAddr6+"/64")
	})
	roottest.In(t, client, func() error {
		if err := upWithAddrs("eth0", clientAddr4+"/24", clientAddr6+"/64"); err != nil {
			return err
		}
		return nil
	})
	// The client reaches pods only through the node's host ports. Wait
	// until the link carries traffic: packets sent before the carrier is
	// up sit in the queue and would arrive late.
	for _, a := range []string{nodeAddr4, nodeAddr6} {
		if err := nxtest.Ping(client, net.ParseIP(a)); err != nil {
			t.Fatalf("client -> node %s: %v", a, err)
		}
	}
	return l
}

func upWithAddrs(ifName string, addrs ...string) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ipn, err := netlink.ParseIPNet(a)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
			return err
		}
	}
	return netlink.LinkSetUp(link)
}

// pod makes a pod on the bridge and returns its namespace and result.
func (l *lab) pod(id string) (string, *current.Result) {
	l.t.Helper()
	p := l.e.Pod()
	r := l.e.MustAdd(l.e.Args(l.brConf, id, p, "eth0"))
	return p, r
}

// conf is a portmap config chained after the bridge: extra fields are
// spliced in, mappings is the runtimeConfig.portMappings JSON (or "").
func (l *lab) conf(prev *current.Result, mappings, extra string) []byte {
	l.t.Helper()
	s := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"portmap","dataDir":%q`, l.network, l.pmDir)
	if extra != "" {
		s += "," + extra
	}
	if mappings != "" {
		s += `,"runtimeConfig":{"portMappings":` + mappings + `}`
	}
	if prev != nil {
		b, err := json.Marshal(prev)
		if err != nil {
			l.t.Fatal(err)
		}
		s += `,"prevResult":` + string(b)
	}
	return []byte(s + "}")
}

func (l *lab) args(conf []byte, id, podNS string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: podNS, IfName: "eth0", StdinData: conf}
}

func (l *lab) inNode(fn func() error) error { return netns.Do(l.e.Node, fn) }

func (l *lab) add(a *skel.CmdArgs) (types.Result, error) {
	var res types.Result
	err := l.inNode(func() error {
		var err error
		res, err = Plugin.Add(a)
		return err
	})
	return res, err
}

func (l *lab) mustAdd(a *skel.CmdArgs) {
	l.t.Helper()
	if _, err := l.add(a); err != nil {
		l.t.Fatalf("portmap ADD %s: %v", a.ContainerID, err)
	}
}

func (l *lab) del(a *skel.CmdArgs) error   { return l.inNode(func() error { return Plugin.Del(a) }) }
func (l *lab) check(a *skel.CmdArgs) error { return l.inNode(func() error { return Plugin.Check(a) }) }
func (l *lab) gc(a *skel.CmdArgs) error    { return l.inNode(func() error { return Plugin.GC(a) }) }

func (l *lab) elems() []Elem {
	l.t.Helper()
	var es []Elem
	roottest.In(l.t, l.e.Node, func() error {
		var err error
		es, err = ListElems()
		return err
	})
	return es
}

// tableRules counts the rules of the podnet-portmap table (0 when absent).
func (l *lab) tableRules() int {
	l.t.Helper()
	n := 0
	roottest.In(l.t, l.e.Node, func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		chains, err := cc.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return err
		}
		for _, c := range chains {
			if c.Table.Name != TableName {
				continue
			}
			rs, err := cc.GetRules(c.Table, c)
			if err != nil {
				return err
			}
			n += len(rs)
		}
		return nil
	})
	return n
}

// expect asserts that addr answers (or not) over network from ns, and,
// when seen is set, that the pod saw the connection come from seen.
func (l *lab) expect(ns, network, addr string, answers bool, seen string) {
	l.t.Helper()
	var from string
	var err error
	for try := 0; try < 3; try++ { // first UDP datagram may be spent on neighbour resolution
		from, err = probe.Exchange(ns, network, addr, 700*time.Millisecond)
		if err == nil || !answers {
			break
		}
	}
	switch {
	case answers && err != nil:
		l.t.Errorf("%s %s: %v", network, addr, err)
	case !answers && err == nil:
		l.t.Errorf("%s %s answered (seen from %s) but should not", network, addr, from)
	case answers && seen != "" && from != seen:
		l.t.Errorf("%s %s: pod saw the connection from %s, want %s", network, addr, from, seen)
	}
}

func ip4(r *current.Result) net.IP {
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			return ip.Address.IP
		}
	}
	return nil
}

func TestRootHostPorts(t *testing.T) {
	l := newLab(t, "pmnet", "10.31.0.0/24", "fd31::/64")
	podA, ra := l.pod("ctr-a")
	podB, rb := l.pod("ctr-b")
	ln, err := probe.Listen(podA, ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	maps := `[{"hostPort":18080,"containerPort":8080,"protocol":"tcp"},{"hostPort":18080,"containerPort":8080,"protocol":"udp"}]`
	a := l.args(l.conf(ra, maps, ""), "ctr-a", podA)
	res, err := l.add(a)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if r, _ := current.NewResultFromResult(res); r == nil || len(r.IPs) != 2 || !r.IPs[0].Address.IP.Equal(ra.IPs[0].Address.IP) {
		t.Errorf("ADD result %+v, want prevResult", res)
	}
	gw := "10.31.0.1"
	for _, proto := range []string{"tcp", "udp"} {
		l.expect(l.client, proto, nodeAddr4+":18080", true, clientAddr4)
		l.expect(l.client, proto, "["+nodeAddr6+"]:18080", true, clientAddr6)
		l.expect(l.e.Node, proto, nodeAddr4+":18080", true, "")
		l.expect(l.e.Node, proto, "127.0.0.1:18080", true, gw)
		l.expect(podB, proto, nodeAddr4+":18080", true, gw)             // hairpin, other pod
		l.expect(podA, proto, nodeAddr4+":18080", true, gw)             // hairpin, itself
		l.expect(l.client, proto, nodeAddr4+":18081", false, "")        // not mapped
		l.expect(podB, proto, ip4(ra).String()+":8080", true, "")       // plain pod traffic untouched
		l.expect(podB, proto, "["+nodeAddr6+"]:18080", true, "fd31::1") // v6 hairpin
	}
	if err := l.check(a); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if es := l.elems(); len(es) != 6 { // 2 maps x 2 families + snat4 + snat6
		t.Errorf("elements after ADD:\n%s", Render(es))
	}

	// An IPv6 hostIP mapping of pod B answers only on that address.
	lnB, err := probe.Listen(podB, ":9090")
	if err != nil {
		t.Fatal(err)
	}
	defer lnB.Close()
	b := l.args(l.conf(rb, `[{"hostPort":18090,"containerPort":9090,"hostIP":"`+nodeAddr6+`"}]`, ""), "ctr-b", podB)
	l.mustAdd(b)
	l.expect(l.client, "tcp", "["+nodeAddr6+"]:18090", true, clientAddr6)
	l.expect(l.client, "tcp", nodeAddr4+":18090", false, "")
	l.expect(l.e.Node, "tcp", "[fd31::1]:18090", false, "")
	if err := l.del(b); err != nil {
		t.Fatal(err)
	}
	if es := l.elems(); len(es) != 6 {
		t.Errorf("elements after B's DEL, want A's 6:\n%s", Render(es))
	}

	if err := l.del(a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	for _, proto := range []string{"tcp", "udp"} {
		l.expect(l.client, proto, nodeAddr4+":18080", false, "")
		l.expect(l.e.Node, proto, "127.0.0.1:18080", false, "")
	}
	if es := l.elems(); len(es) != 0 {
		t.Errorf("elements after DEL:\n%s", Render(es))
	}
	if n := l.tableRules(); n != 0 {
		t.Errorf("%d rules left after the last DEL", n)
	}
	if err := l.del(a); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	if err := l.check(a); err == nil {
		t.Errorf("CHECK after DEL passed")
	}
}

// TestRootHostIPAndCRIKeys: a mapping restricted to one host address
// answers only there; containerd's capitalised keys work; two pods share
// the table; DEL of one leaves the other.
func TestRootHostIPAndCRIKeys(t *testing.T) {
	l := newLab(t, "pmip", "10.32.0.0/24", "")
	roottest.In(t, l.e.Node, func() error {
		link, err := netlink.LinkByName("eth-c")
		if err != nil {
			return err
		}
		ipn, _ := netlink.ParseIPNet("192.168.77.3/24")
		return netlink.AddrAdd(link, &netlink.Addr{IPNet: ipn})
	})
	podA, ra := l.pod("ctr-a")
	podB, rb := l.pod("ctr-b")
	for _, p := range []string{podA, podB} {
		ln, err := probe.Listen(p, ":80")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}
	a := l.args(l.conf(ra, `[{"HostPort":8001,"ContainerPort":80,"Protocol":"TCP","HostIP":"192.168.77.3"}]`, ""), "ctr-a", podA)
	b := l.args(l.conf(rb, `[{"hostPort":8002,"containerPort":80,"protocol":"udp"},{"hostPort":8002,"containerPort":80}]`, `"snat":false`), "ctr-b", podB)
	l.mustAdd(a)
	l.mustAdd(b)

	l.expect(l.client, "tcp", "192.168.77.3:8001", true, clientAddr4)
	l.expect(l.client, "tcp", nodeAddr4+":8001", false, "")
	l.expect(l.e.Node, "tcp", "10.32.0.1:8001", false, "")
	l.expect(l.client, "tcp", nodeAddr4+":8002", true, clientAddr4)
	l.expect(l.client, "udp", "192.168.77.3:8002", true, clientAddr4)
	// snat off: localhost is not masqueraded, so it cannot work.
	l.expect(l.e.Node, "tcp", "127.0.0.1:8002", false, "")

	es := l.elems()
	want := Render([]Elem{
		{Set: mapIPPorts4, HostIP: net.ParseIP("192.168.77.3").To4(), Proto: protoTCP, HostPort: 8001, PodIP: ip4(ra).To4(), PodPort: 80},
		{Set: mapPorts4, Proto: protoTCP, HostPort: 8002, PodIP: ip4(rb).To4(), PodPort: 80},
		{Set: mapPorts4, Proto: protoUDP, HostPort: 8002, PodIP: ip4(rb).To4(), PodPort: 80},
		{Set: setSNAT4, PodIP: ip4(ra).To4()},
	})
	for i := range es {
		es[i].Owner = ""
	}
	sortElems(es)
	if got := Render(es); got != want {
		t.Errorf("elements:\n%s\nwant:\n%s", got, want)
	}

	// DEL of A with neither netns nor prevResult nor mappings.
	bare := l.args(l.conf(nil, "", ""), "ctr-a", "")
	if err := l.del(bare); err != nil {
		t.Fatalf("DEL without netns/prevResult: %v", err)
	}
	l.expect(l.client, "tcp", "192.168.77.3:8001", false, "")
	l.expect(l.client, "tcp", nodeAddr4+":8002", true, clientAddr4)
	if err := l.check(b); err != nil {
		t.Errorf("CHECK B after DEL A: %v", err)
	}
	if n := len(l.elems()); n != 2 {
		t.Errorf("%d elements left, want B's 2", n)
	}
	// DEL of B from runtimeConfig only.
	if err := l.del(l.args(l.conf(nil, `[{"hostPort":8002,"containerPort":80}]`, ""), "ctr-b", "")); err != nil {
		t.Fatal(err)
	}
	if n := len(l.elems()); n != 0 {
		t.Errorf("%d elements left", n)
	}
}

func TestRootGCAndEmpty(t *testing.T) {
	l := newLab(t, "pmgc", "10.33.0.0/24", "")
	podA, ra := l.pod("ctr-a")
	podB, rb := l.pod("ctr-b")

	// No mappings: prevResult back unchanged, nothing created.
	res, err := l.add(l.args(l.conf(ra, `[]`, ""), "ctr-a", podA))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(res)
	want, _ := json.Marshal(ra)
	if string(got) != string(want) {
		t.Errorf("empty mappings: result\n%s\nwant\n%s", got, want)
	}
	if n := l.tableRules(); n != 0 {
		t.Errorf("empty mappings created %d rules", n)
	}

	l.mustAdd(l.args(l.conf(ra, `[{"hostPort":9001,"containerPort":80}]`, ""), "ctr-a", podA))
	l.mustAdd(l.args(l.conf(rb, `[{"hostPort":9002,"containerPort":80}]`, ""), "ctr-b", podB))
	// Another network's element must survive this network's GC.
	other := &lab{t: t, e: l.e, pmDir: l.pmDir, network: "othernet"}
	l.mustAdd(other.args(other.conf(rb, `[{"hostPort":9003,"containerPort":80}]`, ""), "ctr-x", podB))

	gcConf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pmgc","type":"portmap","dataDir":%q,
		"cni.dev/valid-attachments":[{"containerID":"ctr-b","ifname":"eth0"}]}`, l.pmDir))
	if err := l.gc(&skel.CmdArgs{StdinData: gcConf}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	ports := map[uint16]bool{}
	for _, e := range l.elems() {
		if e.isMap() {
			ports[e.HostPort] = true
		}
	}
	if ports[9001] || !ports[9002] || !ports[9003] {
		t.Errorf("after GC host ports %v, want 9002 and 9003", ports)
	}
}

// TestRootNoRouteToPod: a pod address the node has no route to (a bridge
// without isGateway, its subnet not routed by the node) still gets its
// mapping; route_localnet is simply not needed then (the reference plugin
// succeeds too).
func TestRootNoRouteToPod(t *testing.T) {
	l := newLab(t, "pmnr", "10.34.0.0/24", "")
	podA, ra := l.pod("ctr-a")
	var r current.Result
	b, _ := json.Marshal(ra)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	unrouted := net.ParseIP("198.51.100.7")
	r.IPs[0].Address = net.IPNet{IP: unrouted, Mask: net.CIDRMask(24, 32)}
	if err := l.inNode(func() error {
		if rs, err := netlink.RouteGet(unrouted); err == nil && len(rs) > 0 {
			return fmt.Errorf("the node routes %s (%v): the test needs it unrouted", unrouted, rs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l.mustAdd(l.args(l.conf(&r, `[{"hostPort":9011,"containerPort":80}]`, ""), "ctr-a", podA))
	found := false
	for _, e := range l.elems() {
		if e.isMap() && e.HostPort == 9011 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no map element for host port 9011: %+v", l.elems())
	}
	if err := l.del(l.args(l.conf(&r, `[{"hostPort":9011,"containerPort":80}]`, ""), "ctr-a", podA)); err != nil {
		t.Fatal(err)
	}
	if n := len(l.elems()); n != 0 {
		t.Fatalf("%d elements left after DEL", n)
	}
}

// TestRootUDPConntrackFlush: a client that sent to the host port before
// the mapping existed keeps its conntrack entry (to the node itself); ADD
// flushes it, so the same flow reaches the pod right away.
func TestRootUDPConntrackFlush(t *testing.T) {
	l := newLab(t, "pmct", "10.34.0.0/24", "")
	pod, r := l.pod("ctr")
	ln, err := probe.Listen(pod, ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Another pod's mapping makes the table (and its nat chains) exist, so
	// the early flow's conntrack entry gets its (null) NAT binding.
	podO, ro := l.pod("ctr-other")
	l.mustAdd(l.args(l.conf(ro, `[{"hostPort":5354,"containerPort":53,"protocol":"udp"}]`, ""), "ctr-other", podO))
	var conn *net.UDPConn
	roottest.In(t, l.client, func() error {
		var err error
		conn, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(clientAddr4), Port: 40053}, &net.UDPAddr{IP: net.ParseIP(nodeAddr4), Port: 5353})
		return err
	})
	defer conn.Close()
	for i := 0; i < 2; i++ {
		_, _ = conn.Write([]byte("early")) // ECONNREFUSED from the previous one's ICMP is fine
		time.Sleep(100 * time.Millisecond)
	}
	l.mustAdd(l.args(l.conf(r, `[{"hostPort":5353,"containerPort":53,"protocol":"udp"}]`, ""), "ctr", pod))
	buf := make([]byte, 256)
	var n int
	for try := 0; try < 3; try++ {
		conn.Write([]byte("late"))
		conn.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		if n, err = conn.Read(buf); err == nil {
			break
		}
	}
	if err != nil || !strings.HasSuffix(string(buf[:n]), " late") {
		t.Errorf("UDP flow started before ADD: %q, %v", buf[:n], err)
	}
}

// TestRootHairpinRouted: with br_netfilter off, hairpin traffic is routed
// back out the bridge and still needs (and gets) masquerade.
func TestRootHairpinRouted(t *testing.T) {
	l := newLab(t, "pmhp", "10.35.0.0/24", "")
	roottest.In(t, l.e.Node, func() error {
		for _, k := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
			if err := sysctl.Set(k, "0"); err != nil {
				return err
			}
		}
		return nil
	})

	podA, ra := l.pod("ctr-a")
	podB, _ := l.pod("ctr-b")
	ln, err := probe.Listen(podA, ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l.mustAdd(l.args(l.conf(ra, `[{"hostPort":8080,"containerPort":80},{"hostPort":8080,"containerPort":80,"protocol":"udp"}]`, ""), "ctr-a", podA))
	for _, proto := range []string{"tcp", "udp"} {
		l.expect(podB, proto, nodeAddr4+":8080", true, "10.35.0.1")
		l.expect(podA, proto, nodeAddr4+":8080", true, "10.35.0.1")
		l.expect(l.client, proto, nodeAddr4+":8080", true, clientAddr4)
	}
}

func TestRootMasqAll(t *testing.T) {
	l := newLab(t, "pmma", "10.36.0.0/24", "")
	pod, r := l.pod("ctr")
	ln, err := probe.Listen(pod, ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l.mustAdd(l.args(l.conf(r, `[{"hostPort":8080,"containerPort":80}]`, `"masqAll":true`), "ctr", pod))
	l.expect(l.client, "tcp", nodeAddr4+":8080", true, "10.36.0.1")
	l.expect(l.e.Node, "tcp", "127.0.0.1:8080", true, "10.36.0.1")
}

// TestRootCheckRepairTakeover: CHECK sees a missing element and a damaged
// chain, ADD repairs both; a different markMasqBit rebuilds the base rules
// keeping every element; a host port mapped twice goes to the newer ADD and
// the older attachment's DEL leaves it alone; STATUS passes.
func TestRootCheckRepairTakeover(t *testing.T) {
	l := newLab(t, "pmck", "10.37.0.0/24", "")
	podA, ra := l.pod("ctr-a")
	podB, rb := l.pod("ctr-b")
	for _, p := range []string{podA, podB} {
		ln, err := probe.Listen(p, ":80")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}
	a := l.args(l.conf(ra, `[{"hostPort":7001,"containerPort":80},{"hostPort":7002,"containerPort":80}]`, ""), "ctr-a", podA)
	l.mustAdd(a)
	if err := l.check(a); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := l.inNode(func() error { return Plugin.Status(a) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}

	// Remove one element and one base rule behind portmap's back.
	roottest.In(t, l.e.Node, func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		e := Elem{Set: mapPorts4, Proto: protoTCP, HostPort: 7002}
		if err := cc.SetDeleteElements(setDef(mapPorts4), []nftables.SetElement{{Key: e.Key()}}); err != nil {
			return err
		}
		return cc.Flush()
	})
	if err := l.check(a); err == nil || !strings.Contains(err.Error(), "7002") {
		t.Errorf("CHECK with an element gone: %v", err)
	}
	l.expect(l.client, "tcp", nodeAddr4+":7002", false, "")
	roottest.In(t, l.e.Node, func() error {
		cc, err := nftables.New()
		if err != nil {
			return err
		}
		cc.FlushChain(&nftables.Chain{Table: table, Name: "prerouting"})
		return cc.Flush()
	})
	if err := l.check(a); err == nil || !strings.Contains(err.Error(), "chains differ") {
		t.Errorf("CHECK with a chain flushed: %v", err)
	}
	l.mustAdd(a) // repeated ADD repairs
	if err := l.check(a); err != nil {
		t.Errorf("CHECK after the repairing ADD: %v", err)
	}
	l.expect(l.client, "tcp", nodeAddr4+":7002", true, clientAddr4)

	// B maps 7001 too, with another mark bit: B wins the port, the base
	// rules are rebuilt with B's mark, A's other element survives.
	b := l.args(l.conf(rb, `[{"hostPort":7001,"containerPort":80}]`, `"markMasqBit":5`), "ctr-b", podB)
	l.mustAdd(b)
	if err := l.check(b); err != nil {
		t.Errorf("CHECK B: %v", err)
	}
	l.expect(podA, "tcp", nodeAddr4+":7001", true, "10.37.0.1") // hairpin via the new mark
	roottest.In(t, l.e.Node, func() error {
		if err := checkBase(1 << 5); err != nil {
			t.Errorf("base rules not rebuilt for mark 0x20: %v", err)
		}
		return nil
	})
	if err := l.del(a); err != nil {
		t.Fatal(err)
	}
	l.expect(l.client, "tcp", nodeAddr4+":7001", true, clientAddr4)
	l.expect(l.client, "tcp", nodeAddr4+":7002", false, "")
	if err := l.check(b); err != nil {
		t.Errorf("CHECK B after DEL A: %v", err)
	}
}

// TestRootParallel: concurrent ADDs and DELs of different pods serialise on
// the lock and each batch touches only its own elements.
func TestRootParallel(t *testing.T) {
	l := newLab(t, "pmpar", "10.38.0.0/24", "fd38::/64")
	const n = 8
	var as []*skel.CmdArgs
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("ctr-%d", i)
		p, r := l.pod(id)
		as = append(as, l.args(l.conf(r, fmt.Sprintf(`[{"hostPort":%d,"containerPort":80},{"hostPort":%d,"containerPort":80,"protocol":"udp"}]`, 10000+i, 10000+i), ""), id, p))
	}
	errs := make(chan error, n)
	for _, a := range as {
		go func() { _, err := l.add(a); errs <- err }()
	}
	for range as {
		if err := <-errs; err != nil {
			t.Errorf("ADD: %v", err)
		}
	}
	if got := len(l.elems()); got != n*6 {
		t.Errorf("%d elements, want %d", got, n*6)
	}
	for _, a := range as[:n/2] {
		go func() { errs <- l.del(a) }()
	}
	for range as[:n/2] {
		if err := <-errs; err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
	for _, a := range as[n/2:] {
		if err := l.check(a); err != nil {
			t.Errorf("CHECK %s: %v", a.ContainerID, err)
		}
	}
	if got := len(l.elems()); got != n/2*6 {
		t.Errorf("%d elements after DEL, want %d", got, n/2*6)
	}
}

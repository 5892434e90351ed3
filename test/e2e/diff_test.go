package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/sysctl"
)

// TestDiffReference runs every case of diffCases through cnitool twice, in
// fresh node and pod namespaces: once with podnet's plugins and once with
// the reference plugins v1.9.1 in $PODNET_REF_DIR (default
// /var/cache/podnet-ref). It compares, per verb, the exit status, the
// normalised result and the pod's kernel state. A difference fails the test
// unless the case lists it in diverge with its reason; a listed divergence
// that no longer happens fails too, so the table stays true.
func TestDiffReference(t *testing.T) {
	refDir := os.Getenv("PODNET_REF_DIR")
	if refDir == "" {
		refDir = "/var/cache/podnet-ref"
	}
	if _, err := os.Stat(filepath.Join(refDir, "bridge")); err != nil {
		t.Skipf("reference plugins v1.9.1 not found in %s (set PODNET_REF_DIR): %v", refDir, err)
	}
	tl := needTools(t)
	if !tl.podnetPlugins {
		t.Skip("PODNET_E2E_PLUGINS is set: nothing to compare the reference with")
	}
	for _, c := range diffCases {
		versions := c.versions
		if len(versions) == 0 {
			versions = diffVersions
		}
		for _, v := range versions {
			t.Run(c.name+"/"+v, func(t *testing.T) {
				t.Parallel()
				pn := runDiffCase(t, tl.pluginDir, c, v)
				ref := runDiffCase(t, refDir, c, v)
				compareDiff(t, c, pn, ref)
			})
		}
	}
}

var diffVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// diffCase is one network configuration. conf is the "plugins" array; in it
// @DATA@ is replaced by a per-run data directory.
type diffCase struct {
	name     string
	versions []string // default diffVersions
	conf     string
	// master makes a link "pnd0" (a veth) in the node namespace
	// (macvlan's master).
	master bool
	// podBridge makes a bridge "pnd-tbr" in the pod namespace (tap's bridge).
	podBridge bool
	// diverge lists the intended differences: key (see diffRun) -> reason.
	diverge map[string]string
}

const hostLocal = `"ipam": {"type": "host-local", "dataDir": "@DATA@/ipam", "ranges": [[{"subnet": "10.80.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}`
const staticIPAM = `"ipam": {"type": "static", "addresses": [{"address": "10.81.0.5/24", "gateway": "10.81.0.1"}], "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.0.2.0/24", "gw": "10.81.0.9"}], "dns": {"nameservers": ["10.81.0.53"], "search": ["example.test"]}}`

// vethQueue is the reason for a host veth's queue length that differs.
const vethQueue = "podnet leaves the kernel's default queue length (1000) on the host veth; the reference sets 0. " +
	"A veth has no qdisc by default either way (IFF_NO_QUEUE), but a qdisc added later (an operator's HTB, tc shaping) " +
	"takes its limit from it, and 0 makes such a qdisc drop (openshift/origin#11126); the reference's own bandwidth plugin raises it to 1000"

// ptpScope is the reason for ptp's host route scope.
const ptpScope = "podnet's host route to a ptp pod has scope link, the kernel's scope for a route through a device, and what " +
	"routed CNIs (Calico, Flannel host-gw) use; the reference uses scope host, which means an address of this node. " +
	"Forwarding and the node's source address towards the pod are the same (docs/plugins/ptp.md)"

// with merges divergence maps.
func with(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

var (
	vethDiverge = map[string]string{"add.node.txqlen": vethQueue}
	ptpDiverge  = map[string]string{"add.node.txqlen": vethQueue, "add.node.scope": ptpScope}
)

// ipamDNS is the reason for a result whose DNS differs.
const ipamDNS = "the reference's macvlan and tap replace the IPAM's DNS with their own (empty) dns field; podnet passes the IPAM's DNS on, as the reference's bridge and ptp do"

var diffCases = []diffCase{
	{name: "bridge", conf: `[{"type": "bridge", "bridge": "pnd-br0", ` + hostLocal + `}]`, diverge: vethDiverge},
	{name: "bridge-gw-masq-mtu-hairpin", conf: `[{"type": "bridge", "bridge": "pnd-br0", "isGateway": true, "ipMasq": true, "mtu": 1400, "hairpinMode": true, ` + hostLocal + `}]`, diverge: vethDiverge},
	{name: "bridge-dualstack", versions: []string{"1.0.0", "1.1.0"}, conf: `[{"type": "bridge", "bridge": "pnd-br0", "isGateway": true,
	  "ipam": {"type": "host-local", "dataDir": "@DATA@/ipam", "ranges": [[{"subnet": "10.80.0.0/24"}], [{"subnet": "fd00:80::/64"}]],
	           "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}]`, diverge: vethDiverge},
	{name: "bridge-static", conf: `[{"type": "bridge", "bridge": "pnd-br0", "isGateway": true, ` + staticIPAM + `}]`, diverge: vethDiverge},
	{name: "ptp", conf: `[{"type": "ptp", "ipMasq": true, "mtu": 1450, ` + hostLocal + `}]`, diverge: ptpDiverge},
	{name: "ptp-static", versions: []string{"1.0.0"}, conf: `[{"type": "ptp", ` + staticIPAM + `}]`, diverge: ptpDiverge},
	{name: "macvlan", master: true, conf: `[{"type": "macvlan", "master": "pnd0", "mode": "bridge", ` + hostLocal + `}]`},
	{name: "macvlan-static-mtu", master: true, versions: []string{"0.4.0", "1.1.0"}, conf: `[{"type": "macvlan", "master": "pnd0", "mtu": 1400, ` + staticIPAM + `}]`,
		diverge: map[string]string{
			"add.result": ipamDNS,
		}},
	{name: "tap", conf: `[{"type": "tap", "mtu": 1400, ` + hostLocal + `}]`},
	{name: "tap-bridge", podBridge: true, versions: []string{"1.0.0", "1.1.0"}, conf: `[{"type": "tap", "bridge": "pnd-tbr", ` + staticIPAM + `}]`,
		diverge: map[string]string{"add.result": ipamDNS}},
	{name: "loopback", versions: []string{"0.3.1"}, conf: `[{"type": "loopback"}]`,
		diverge: map[string]string{
			"add.result": `the reference's loopback leaves "version" empty in a 0.3.x/0.4.0 result; podnet fills in "4"/"6", which those versions require`,
		}},
	{name: "loopback", versions: []string{"0.4.0"}, conf: `[{"type": "loopback"}]`,
		diverge: map[string]string{
			"add.result": `the reference's loopback leaves "version" empty in a 0.3.x/0.4.0 result; podnet fills in "4"/"6", which those versions require`,
		}},
	{name: "loopback", versions: []string{"1.0.0", "1.1.0"}, conf: `[{"type": "loopback"}]`},
	{name: "chain", versions: []string{"0.4.0", "1.0.0", "1.1.0"}, conf: `[{"type": "bridge", "bridge": "pnd-br0", "isGateway": true, "ipMasq": true, "hairpinMode": true, ` + hostLocal + `},
	  {"type": "portmap", "capabilities": {"portMappings": true}},
	  {"type": "tuning", "sysctl": {"net.core.somaxconn": "1111", "net.ipv4.conf.eth0.rp_filter": "2"}},
	  {"type": "bandwidth", "ingressRate": 20000000, "ingressBurst": 1000000, "egressRate": 20000000, "egressBurst": 1000000},
	  {"type": "firewall"}]`,
		diverge: map[string]string{
			"del.pod": "podnet's tuning DEL restores the sysctls it set (net.core.somaxconn back to 4096); the reference's leaves them",
		}},
	{name: "firewall", versions: []string{"0.3.1"}, conf: `[{"type": "bridge", "bridge": "pnd-br0", ` + hostLocal + `}, {"type": "firewall"}]`,
		diverge: map[string]string{
			"add.node.txqlen": vethQueue,
			"add.ok":          "the reference's firewall refuses cniVersion 0.3.1 (it supports 0.4.0+); podnet's accepts it",
			"add.result":      "follows from add.ok",
			"del.ok":          "the reference's firewall refuses 0.3.1 on DEL too, so its DEL fails",
			"del.pod":         "follows from del.ok: the reference leaves eth0 in the pod",
		}},
	{name: "unknown-field", versions: []string{"1.0.0"}, conf: `[{"type": "bridge", "bridge": "pnd-br0", "noSuchField": {"x": 1}, ` + hostLocal + `}]`, diverge: vethDiverge},

	// Bad input: ADD fails in both, DEL after it must clean up.
	{name: "bad-bridge-mtu", versions: []string{"0.4.0", "1.1.0"}, conf: `[{"type": "bridge", "bridge": "pnd-br0", "mtu": 70000, ` + hostLocal + `}]`},
	{name: "bad-plugin-type", versions: []string{"1.0.0"}, conf: `[{"type": "pnd-no-such-plugin"}]`},
	{name: "bad-macvlan-master", versions: []string{"1.0.0"}, conf: `[{"type": "macvlan", "master": "pnd-missing", ` + hostLocal + `}]`},
	{name: "bad-ptp-no-ipam", versions: []string{"1.0.0"}, conf: `[{"type": "ptp"}]`,
		diverge: map[string]string{
			"del.ok": "the reference's ptp DEL fails without ipam (no plugin name provided); podnet's has nothing to release and succeeds (docs/del.md)",
		}},
	{name: "bad-hostlocal-subnet", versions: []string{"0.4.0", "1.1.0"},
		conf: `[{"type": "bridge", "bridge": "pnd-br0", "ipam": {"type": "host-local", "dataDir": "@DATA@/ipam", "ranges": [[{"subnet": "10.80.0.0/33"}]]}}]`,
		diverge: map[string]string{
			"del.ok":          "the reference's host-local DEL loads the full config and fails on the invalid CIDR; podnet's DEL only walks dataDir/<name> and succeeds (docs/del.md)",
			"add.pod":         "podnet validates the IPAM config before it makes the veth pair; the reference makes it first and leaves it (down) when host-local fails",
			"add.node":        "follows from add.pod: the reference's host veth is left on the node",
			"add.node.txqlen": "follows from add.pod: the reference's host veth is left on the node",
		}},
	{name: "bad-bridge-vlan", versions: []string{"1.0.0"}, conf: `[{"type": "bridge", "bridge": "pnd-br0", "vlan": 5000, ` + hostLocal + `}]`,
		diverge: map[string]string{
			"del.ok": "the reference's bridge DEL refuses vlan outside 0-4094; podnet's DEL ignores ADD-only fields (docs/del.md)",
		}},
}

// diffRun is what one implementation did: key -> normalised value. Keys:
// add.ok, add.result, add.pod, add.node (and .txqlen, .scope), check.ok,
// del.ok, del.pod.
type diffRun map[string]string

func runDiffCase(t *testing.T, pluginDir string, c diffCase, version string) diffRun {
	n := newNode(t)
	n.tools.pluginDir = pluginDir
	pod := newPod(t, true)
	if c.master {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pnd0"}, PeerName: "pnd0p"}
		if err := handle(t, n.ns).LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		l, err := handle(t, n.ns).LinkByName("pnd0")
		if err == nil {
			err = handle(t, n.ns).LinkSetUp(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if c.podBridge {
		if err := handle(t, pod).LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "pnd-tbr"}}); err != nil {
			t.Fatal(err)
		}
	}
	name := fmt.Sprintf("pnd-%d-%d", os.Getpid(), seq.Add(1))
	data := t.TempDir()
	conf := strings.ReplaceAll(c.conf, "@DATA@", data)
	n.writeConf(name, fmt.Sprintf(`{"cniVersion": %q, "name": %q, "plugins": %s}`, version, name, conf))
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(libcniCache, "results", name+"-*"))
		for _, f := range files {
			os.Remove(f)
		}
	})

	before, err := handle(t, pod).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	r := diffRun{}
	logErr := func(verb string, err error) {
		if err != nil {
			// cnitool prints the plugin's error once with "Error: ".
			msg := err.Error()
			if i := strings.Index(msg, "Error: "); i >= 0 {
				msg, _, _ = strings.Cut(msg[i:], "\n")
			}
			t.Logf("%s %s: %s", filepath.Base(pluginDir), verb, msg)
		}
	}
	out, err := n.cnitool("add", name, pod)
	logErr("add", err)
	r["add.ok"] = fmt.Sprint(err == nil)
	if err == nil {
		r["add.result"] = normResult(t, out)
	}
	r["add.pod"] = podState(t, pod)
	nodeState(t, n.ns, "add.node", r)
	if err == nil && version != "0.3.1" {
		_, err := n.cnitool("check", name, pod)
		logErr("check", err)
		r["check.ok"] = fmt.Sprint(err == nil)
	}
	_, err = n.cnitool("del", name, pod)
	logErr("del", err)
	r["del.ok"] = fmt.Sprint(err == nil)
	// podnet's bridge DEL leaves deleting the veth pair to a reaper: wait
	// for the pod to hold only its links from before ADD, then take the
	// state either way.
	for deadline := time.Now().Add(reapWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if links, _ := handle(t, pod).LinkList(); len(links) == len(before) {
			break
		}
	}
	r["del.pod"] = podState(t, pod)
	return r
}

func compareDiff(t *testing.T, c diffCase, pn, ref diffRun) {
	keys := map[string]bool{}
	for k := range pn {
		keys[k] = true
	}
	for k := range ref {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		p, r := pn[k], ref[k]
		reason, listed := c.diverge[k]
		switch {
		case p != r && listed:
			t.Logf("intended divergence %s: %s", k, reason)
		case p != r:
			t.Errorf("unlisted divergence in %s:\n%s", k, lineDiff(p, r))
		case listed:
			t.Errorf("listed divergence %s (%s) no longer happens: both %s", k, reason, p)
		}
	}
}

// normResult drops what differs between any two runs (MACs, sandbox paths,
// veth host names) and re-encodes the result with sorted keys.
func normResult(t *testing.T, out string) string {
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("result is not JSON: %v: %q", err, out)
	}
	ifs, _ := v["interfaces"].([]any)
	for _, i := range ifs {
		m, _ := i.(map[string]any)
		delete(m, "mac")
		if _, ok := m["sandbox"]; ok {
			m["sandbox"] = "<pod>"
		}
		// Host-side names derived from random or per-run values: veth
		// peers, bandwidth's ifb (a hash of network name and container ID).
		if s, _ := m["name"].(string); strings.HasPrefix(s, "veth") {
			m["name"] = "<veth>"
		} else if strings.HasPrefix(s, "bwp") {
			m["name"] = "<ifb>"
		}
	}
	b, err := json.Marshal(v) // maps marshal with sorted keys
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// podState is the pod's links (name, kind, MTU, up), addresses (without
// the MAC-derived link-local ones), main-table routes and the sysctls the
// plugins set, one item a line, sorted.
func podState(t *testing.T, pod string) string {
	h := handle(t, pod)
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		lines = append(lines, fmt.Sprintf("link %s %s mtu=%d up=%v", a.Name, l.Type(), a.MTU, a.Flags&net.FlagUp != 0))
		as, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range as {
			if ad.IP.IsLinkLocalUnicast() {
				continue
			}
			lines = append(lines, fmt.Sprintf("addr %s %s", a.Name, ad.IPNet))
		}
		if a.Name != "lo" {
			for _, s := range []string{"net.ipv4.conf.%s.rp_filter", "net.ipv4.conf.%s.arp_notify", "net.ipv6.conf.%s.accept_dad"} {
				lines = append(lines, nsSysctl(pod, fmt.Sprintf(s, a.Name)))
			}
		}
	}
	lines = append(lines, nsSysctl(pod, "net.core.somaxconn"))
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		lines = append(lines, fmt.Sprintf("route %v via %v dev %s scope %d", r.Dst, r.Gw, names[r.LinkIndex], r.Scope))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// nodeState records what ADD left in the node namespace under three keys:
// prefix (forwarding; each link's type, MTU, state and IPv6
// router-advertisement handling; the node's routes), prefix+".txqlen" (each
// link's queue length) and prefix+".scope" (each route's scope), so that a
// listed divergence in one does not hide a new one in another. Veth and
// ifb names, which differ per run, show as <veth> and <ifb>.
func nodeState(t *testing.T, node, prefix string, r diffRun) {
	lines := []string{nsSysctl(node, "net.ipv4.ip_forward"), nsSysctl(node, "net.ipv6.conf.all.forwarding")}
	var qlen, scope []string
	h := handle(t, node)
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		show := a.Name
		if strings.HasPrefix(show, "veth") {
			show = "<veth>"
		} else if strings.HasPrefix(show, "bwp") {
			show = "<ifb>" // bandwidth's, named from network and container
		}
		names[a.Index] = show
		if a.Name == "lo" {
			continue
		}
		lines = append(lines, fmt.Sprintf("link %s %s mtu=%d up=%v %s", show, l.Type(), a.MTU, a.Flags&net.FlagUp != 0,
			strings.TrimPrefix(nsSysctl(node, "net.ipv6.conf."+a.Name+".accept_ra"), "net.ipv6.conf."+a.Name+".")))
		qlen = append(qlen, fmt.Sprintf("%s txqlen=%d", show, a.TxQLen))
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range routes {
		if rt.Dst != nil && rt.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		lines = append(lines, fmt.Sprintf("route %v via %v dev %s src %v", rt.Dst, rt.Gw, names[rt.LinkIndex], rt.Src))
		scope = append(scope, fmt.Sprintf("%v dev %s scope %d", rt.Dst, names[rt.LinkIndex], rt.Scope))
	}
	for k, v := range map[string][]string{prefix: lines, prefix + ".txqlen": qlen, prefix + ".scope": scope} {
		sort.Strings(v)
		r[k] = strings.Join(v, "\n")
	}
}

func nsSysctl(path, name string) string {
	var v string
	err := netns.Do(path, func() error {
		var err error
		v, err = sysctl.Get(name)
		return err
	})
	if err != nil {
		return name + " <unreadable>"
	}
	return name + "=" + strings.TrimSpace(v)
}

// lineDiff shows the lines only podnet has ("podnet:") and only the
// reference has ("ref:").
func lineDiff(p, r string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	pm, rm := in(p), in(r)
	var out []string
	for _, l := range strings.Split(p, "\n") {
		if !rm[l] {
			out = append(out, "podnet: "+l)
		}
	}
	for _, l := range strings.Split(r, "\n") {
		if !pm[l] {
			out = append(out, "ref:    "+l)
		}
	}
	return strings.Join(out, "\n")
}

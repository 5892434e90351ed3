package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vns "github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/metrics"
	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
	"github.com/podnet/podnet/internal/probe"
)

// npWorld is the conformance lab: x, y, z with pods a, b, c spread over two
// nodes, each pod serving TCP and UDP on 80 and 81. The lab is dual-stack:
// every pod has an IPv4 and an IPv6 address and serves on both.
type npWorld struct {
	t    *testing.T
	l    *Lab
	pods map[npPod]*Pod
}

func newNPWorld(t *testing.T) *npWorld {
	l := upLabWith(t, Options{Nodes: 2, Backend: VXLAN, IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ports []corev1.ContainerPort
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		for _, port := range npPorts {
			ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), ContainerPort: int32(port), Protocol: proto})
		}
	}
	w := &npWorld{t: t, pods: map[npPod]*Pod{}}
	for _, p := range npPods() {
		spec := PodSpec{Namespace: p.ns, Name: p.name, Node: npNode(p), Labels: map[string]string{"pod": p.name}, Ports: ports}
		if _, err := AddPod(ctx, "", l.Name, spec); err != nil {
			t.Fatalf("add %s: %v", p, err)
		}
	}
	for _, ns := range npNamespaces {
		if err := Label(ctx, "", l.Name, etcd.KindNamespace, ns, LabelChange{Set: map[string]string{"ns": ns}}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Load("", l.Name)
	if err != nil {
		t.Fatal(err)
	}
	w.l = l
	for _, p := range npPods() {
		lp := l.Pod(p.String())
		if lp == nil || !lp.IPv4().IsValid() || !lp.IPv6().IsValid() {
			t.Fatalf("pod %s not in lab.json with an IPv4 and an IPv6 address: %+v", p, lp)
		}
		w.pods[p] = lp
		for _, port := range npPorts {
			// The wildcard "[::]" is one dual-stack socket per protocol
			// (IPv4 peers appear as ::ffff:a.b.c.d).
			ln, err := probe.Listen(NetnsPath(lp.Netns), fmt.Sprintf("[::]:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}
	}
	return w
}

// npCell is one probe: from, to, protocol, port, over the pods' IPv4 or
// (v6) IPv6 addresses.
type npCell struct {
	from, to npPod
	proto    string
	port     int
	v6       bool
}

// npFamilies are the address families every case is probed over.
var npFamilies = []bool{false, true}

func famName(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

// addr is p's address of the family.
func (w *npWorld) addr(p npPod, v6 bool) netip.Addr {
	if v6 {
		return w.pods[p].IPv6()
	}
	return w.pods[p].IPv4()
}

// probeAll probes every cell (but a pod to itself) in parallel and returns
// which connected.
func (w *npWorld) probeAll(cells []npCell) map[npCell]bool {
	got := map[npCell]bool{}
	var mu sync.Mutex
	sem := make(chan struct{}, 48)
	var wg sync.WaitGroup
	for _, c := range cells {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			to := w.addr(c.to, c.v6)
			_, err := probe.Exchange(NetnsPath(w.pods[c.from].Netns), c.proto, netip.AddrPortFrom(to, uint16(c.port)).String(), 500*time.Millisecond)
			mu.Lock()
			got[c] = err == nil
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got
}

func npCells(v6 bool) []npCell {
	var out []npCell
	for _, f := range npPods() {
		for _, to := range npPods() {
			if f == to {
				continue
			}
			for _, proto := range npProtos {
				for _, port := range npPorts {
					out = append(out, npCell{f, to, proto, port, v6})
				}
			}
		}
	}
	return out
}

// expectMatrix probes, over IPv4 or (v6) IPv6, until every cell is as
// allow says (cells that differ are probed again: policy lands
// asynchronously, probes may time out on a loaded machine) or the deadline
// passes, then fails with the table. It returns what was probed last.
func (w *npWorld) expectMatrix(name string, v6 bool, allow func(f, t npPod, proto string, port int) bool) map[npCell]bool {
	w.t.Helper()
	name += " [" + famName(v6) + "]"
	cells := npCells(v6)
	got := w.probeAll(cells)
	for deadline := time.Now().Add(15 * time.Second); ; {
		var wrong []npCell
		for _, c := range cells {
			if got[c] != allow(c.from, c.to, c.proto, c.port) {
				wrong = append(wrong, c)
			}
		}
		if len(wrong) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			w.t.Errorf("%s: %d of %d cells differ from the expected reachability:\n%s", name, len(wrong), len(cells), npTable(got, v6, allow))
			return got
		}
		time.Sleep(200 * time.Millisecond)
		for c, ok := range w.probeAll(wrong) {
			got[c] = ok
		}
	}
}

// npTable prints, per protocol and port, the probed matrix: rows from,
// columns to; "." connected, "X" blocked, and a mismatch in brackets
// (what was probed) with the expectation lost.
func npTable(got map[npCell]bool, v6 bool, allow func(f, t npPod, proto string, port int) bool) string {
	var b strings.Builder
	pods := npPods()
	for _, proto := range npProtos {
		for _, port := range npPorts {
			fmt.Fprintf(&b, "%s %s/%d  (. connected, X blocked, [.]/[X] probed against the expectation)\n      ", famName(v6), proto, port)
			for _, to := range pods {
				fmt.Fprintf(&b, "%-5s", to)
			}
			b.WriteString("\n")
			for _, f := range pods {
				fmt.Fprintf(&b, "%-6s", f)
				for _, to := range pods {
					c := npCell{f, to, proto, port, v6}
					s := "-"
					if f != to {
						s = "X"
						if got[c] {
							s = "."
						}
						if got[c] != allow(f, to, proto, port) {
							s = "[" + s + "]"
						}
					}
					fmt.Fprintf(&b, "%-5s", s)
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

// expectExplain checks the property: explain, computed from the model the
// agents compile, predicts every probed cell.
func (w *npWorld) expectExplain(name string, got map[npCell]bool) {
	w.t.Helper()
	m, err := w.l.PolicyModel(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	bad := 0
	for c, ok := range got {
		proto, _ := policy.ParseProto(c.proto)
		e := policy.ExplainModel(m, policy.Packet{Src: w.addr(c.from, c.v6), Dst: w.addr(c.to, c.v6), Proto: proto, Port: uint16(c.port)})
		if (e.Verdict == "allow") != ok {
			if bad++; bad <= 10 {
				w.t.Errorf("%s [%s]: %s -> %s %s/%d probed connected=%v, explain says: %s", name, famName(c.v6), c.from, c.to, c.proto, c.port, ok, e)
			}
		}
	}
	if bad > 10 {
		w.t.Errorf("%s: %d cells where explain and the probe disagree", name, bad)
	}
}

// expectDenied checks that the agent of pod p's node reports packets
// denied by policy in direction on its /metrics.
func (w *npWorld) expectDenied(p npPod, policy, direction string) {
	w.t.Helper()
	addr := w.l.Node(w.pods[p].Node).MetricsAddress()
	want := fmt.Sprintf(`podnet_policy_denied_packets_total{direction=%q,policy=%q} `, direction, policy)
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, err := metrics.Fetch(context.Background(), addr, "/metrics")
		if err != nil {
			w.t.Fatalf("metrics of %s's node: %v", p, err)
		}
		body = b
		for _, line := range strings.Split(body, "\n") {
			if n, ok := strings.CutPrefix(line, want); ok && n != "0" {
				return
			}
		}
	}
	w.t.Errorf("metrics of %s's node: no %s> 0 in\n%s", p, want, body)
}

func (w *npWorld) apply(yaml string) {
	w.t.Helper()
	if err := w.l.Apply(context.Background(), strings.NewReader(yaml), io.Discard); err != nil {
		w.t.Fatalf("apply: %v\n%s", err, yaml)
	}
}

func (w *npWorld) delete(yaml string) {
	w.t.Helper()
	if err := w.l.Delete(context.Background(), strings.NewReader(yaml), io.Discard); err != nil {
		w.t.Fatalf("delete: %v", err)
	}
}

// expand fills c's placeholders with the IPv4 or (v6) IPv6 values.
func (w *npWorld) expand(c npCase, v6 bool) string {
	cidr := w.l.ClusterCIDR
	if v6 {
		cidr = w.l.ClusterCIDR6
	}
	subnet := func(node string) string {
		for _, s := range w.l.Node(node).Subnets {
			if s.Addr().Is6() == v6 {
				return s.String()
			}
		}
		w.t.Fatalf("node %s has no %s subnet: %v", node, famName(v6), w.l.Node(node).Subnets)
		return ""
	}
	return npExpand(c.policies, cidr.String(), func(p npPod) netip.Addr { return w.addr(p, v6) }, subnet)
}

// TestNetpolConformance runs the e2e-shaped cases with real TCP and UDP
// across two nodes (each case: apply, full matrix, explain for every cell,
// delete, everything open again), then a policy update while traffic
// flows, then fail-closed pod creation with the node's agent down.
func TestNetpolConformance(t *testing.T) {
	t.Parallel()
	w := newNPWorld(t)
	for _, v6 := range npFamilies {
		w.expectMatrix("before any policy", v6, npAll)
	}
	for _, c := range npCases {
		if !t.Run(c.name, func(t *testing.T) {
			w.t = t
			// Each family in turn; a case whose text names addresses
			// (ipBlock) is replaced by its IPv6 text for the IPv6 pass.
			applied := ""
			for _, v6 := range npFamilies {
				if y := w.expand(c, v6); y != applied {
					w.apply(y)
					applied = y
				}
				got := w.expectMatrix(c.name, v6, c.allow)
				w.expectExplain(c.name, got)
			}
			w.delete(applied)
			for _, v6 := range npFamilies {
				w.expectMatrix(c.name+" deleted", v6, npAll)
			}
		}) {
			w.t = t
			return
		}
	}
	w.t = t

	t.Run("update-while-traffic-flows", func(t *testing.T) {
		w.t = t
		from := func(ns string) string {
			return `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: moving, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "` + ns + `"}}}]
`
		}
		w.apply(from("z"))
		w.expectMatrix("from z", false, func(f, to npPod, _ string, _ int) bool { return to != xa || f.ns == "z" })
		w.apply(from("y"))
		w.expectMatrix("updated to from y", false, func(f, to npPod, _ string, _ int) bool { return to != xa || f.ns == "y" })
		w.delete(from("y"))
		w.expectMatrix("deleted", false, npAll)
	})

	t.Run("policy-log", func(t *testing.T) {
		w.t = t
		deny := w.expand(npCases[0], false) // default-deny-ingress in x
		w.apply(deny)
		defer w.delete(deny)
		w.expectMatrix("deny x", false, npCases[0].allow)
		ns, err := vns.GetFromPath(NetnsPath(w.l.Node(w.pods[xa].Node).Netns))
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		r, err := policykernel.ListenLog(int(ns), agent.DefaultPolicyLogGroup)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// The chain is x/a's ingress profile (shared, named by a hash).
		want := policykernel.LoggedDrop{Src: w.pods[yb].IPv4(), Dst: w.pods[xa].IPv4(), Proto: 6, Port: 80}
		w.probeAll([]npCell{{yb, xa, "tcp", 80, false}})
		var seen []policykernel.LoggedDrop
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			_ = r.SetDeadline(deadline)
			ds, err := r.Read()
			if err != nil {
				break
			}
			seen = append(seen, ds...)
			if slices.ContainsFunc(ds, func(d policykernel.LoggedDrop) bool {
				return strings.HasPrefix(d.Chain, "ingress-") && d.Src == want.Src && d.Dst == want.Dst && d.Proto == want.Proto && d.Port == want.Port
			}) {
				w.expectDenied(xa, "x/deny-ingress", "ingress")
				return
			}
		}
		t.Errorf("NFLOG: want %+v among %+v", want, seen)
	})

	t.Run("fail-closed-pod-creation", func(t *testing.T) {
		w.t = t
		deny := w.expand(npCases[0], false) // default-deny-ingress in x
		w.apply(deny)
		w.expectMatrix("deny x", false, npCases[0].allow)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := w.l.StopAgent("n1", syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Agent down: a pod of a namespace with policies must not start;
		// one of a namespace without may.
		_, err := AddPod(ctx, "", w.l.Name, PodSpec{Namespace: "x", Name: "late", Node: "n1", Labels: map[string]string{"pod": "late"}})
		if err == nil || !strings.Contains(err.Error(), "NetworkPolicies") {
			t.Fatalf("x/late with n1's agent down: %v, want a refusal naming the policies", err)
		}
		if _, err := AddPod(ctx, "", w.l.Name, PodSpec{Namespace: "z", Name: "free", Node: "n1"}); err != nil {
			t.Fatalf("z/free (no policies) with n1's agent down: %v", err)
		}
		// Rules stay in force while the agent is down.
		got := w.probeAll([]npCell{{yb, xa, "tcp", 80, false}})
		if got[npCell{yb, xa, "tcp", 80, false}] {
			t.Error("y/b reached x/a while n1's agent was down: the rules did not stay")
		}
		l, err := Load("", w.l.Name) // AddPod saved lab.json: start from it
		if err != nil {
			t.Fatal(err)
		}
		w.l = l
		if err := w.l.StartAgent("n1", 0); err != nil {
			t.Fatal(err)
		}
		// Agent back: the pod starts, and its first packet is filtered.
		var p *Pod
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			p, err = AddPod(ctx, "", w.l.Name, PodSpec{Namespace: "x", Name: "late", Node: "n1", Labels: map[string]string{"pod": "late"}})
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("x/late after n1's agent came back: %v", err)
		}
		ln, err := probe.Listen(NetnsPath(p.Netns), "0.0.0.0:80")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if _, err := probe.Exchange(NetnsPath(w.pods[yb].Netns), "tcp", netip.AddrPortFrom(p.IPv4(), 80).String(), 500*time.Millisecond); err == nil {
			t.Error("y/b reached the new x/late at once: its policy was not in force when ADD returned")
		}
		w.delete(deny)
	})
}

package lab

import (
	"net/netip"
	"slices"
	"strings"
)

// The NetworkPolicy conformance cases, after the Kubernetes e2e netpol
// suite (test/e2e/network/netpol): namespaces x, y, z, each with pods a, b,
// c labelled pod=<name>, namespaces labelled ns=<name> (and
// kubernetes.io/metadata.name), servers on TCP and UDP ports 80 and 81, and
// named container ports serve-80-tcp, serve-81-tcp, serve-80-udp,
// serve-81-udp. Each case is the policies to apply and, independently of
// podnet's compiler, whether each (from, to, protocol, port) cell must
// connect. A pod always reaches itself (loopback never leaves the pod).

type npPod struct{ ns, name string }

func (p npPod) String() string { return p.ns + "/" + p.name }

var (
	npNamespaces = []string{"x", "y", "z"}
	npNames      = []string{"a", "b", "c"}
	npPorts      = []int{80, 81}
	npProtos     = []string{"tcp", "udp"}
)

func npPods() []npPod {
	var out []npPod
	for _, ns := range npNamespaces {
		for _, n := range npNames {
			out = append(out, npPod{ns, n})
		}
	}
	return out
}

// npNode is the node a pod runs on: the pods alternate between n1 and n2.
func npNode(p npPod) string {
	if slices.Index(npPods(), p)%2 == 0 {
		return "n1"
	}
	return "n2"
}

// npCase is one policy set and the expected matrix, the same over IPv4 and
// IPv6. The policies may use, filled for the family probed: {{ip NS/NAME}}
// (a pod's address), {{host NS/NAME}} (its /32 or /128), {{cidr}} (the
// cluster CIDR) and {{subnet NODE}} (the node's pod subnet).
type npCase struct {
	name     string
	policies string
	allow    func(from, to npPod, proto string, port int) bool
}

var (
	xa = npPod{"x", "a"}
	yb = npPod{"y", "b"}
	zc = npPod{"z", "c"}
)

func npAll(npPod, npPod, string, int) bool { return true }

var npCases = []npCase{
	{name: "default-deny-ingress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`, allow: func(f, t npPod, _ string, _ int) bool { return t.ns != "x" }},

	{name: "default-deny-egress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
`, allow: func(f, t npPod, _ string, _ int) bool { return f.ns != "x" }},

	{name: "allow-all-ingress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
`, allow: npAll},

	{name: "allow-from-namespace", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
`, allow: func(f, t npPod, _ string, _ int) bool { return t != xa || f.ns == "y" }},

	{name: "allow-from-pod-and-namespace", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: b}}
`, allow: func(f, t npPod, _ string, _ int) bool { return t != xa || f == yb }},

	{name: "allow-from-pod-or-namespace", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-or-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
    - podSelector: {matchLabels: {pod: b}}
`, allow: func(f, t npPod, _ string, _ int) bool { return t != xa || f.ns == "y" || f == npPod{"x", "b"} }},

	{name: "match-expressions", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: expr, namespace: x}
spec:
  podSelector:
    matchExpressions: [{key: pod, operator: In, values: [a, b]}]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x, "y"]}]
      podSelector:
        matchExpressions: [{key: pod, operator: Exists}]
    - podSelector:
        matchExpressions: [{key: nosuch, operator: DoesNotExist}, {key: pod, operator: In, values: [c]}]
`, allow: func(f, t npPod, _ string, _ int) bool {
		return t.ns != "x" || t.name == "c" || f.ns == "z" || f == npPod{"x", "c"}
	}},

	{name: "ipblock-except-ingress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr-but-yb, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - ipBlock: {cidr: "{{cidr}}", except: ["{{host y/b}}"]}
`, allow: func(f, t npPod, _ string, _ int) bool { return t != xa || f != yb }},

	{name: "ipblock-except-egress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-cidr-but-zc, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: "{{cidr}}", except: ["{{host z/c}}"]}
`, allow: func(f, t npPod, _ string, _ int) bool { return f != xa || t != zc }},

	{name: "ipblock-except-node-subnet", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr-but-n2, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - ipBlock: {cidr: "{{cidr}}", except: ["{{subnet n2}}"]}
`, allow: func(f, t npPod, _ string, _ int) bool { return t != xa || npNode(f) != "n2" }},

	{name: "named-port-ingress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {port: serve-80-tcp}
    - {port: serve-81-udp, protocol: UDP}
`, allow: func(f, t npPod, proto string, port int) bool {
		return t != xa || (proto == "tcp" && port == 80) || (proto == "udp" && port == 81)
	}},

	{name: "named-port-egress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - {port: serve-81-tcp}
`, allow: func(f, t npPod, proto string, port int) bool { return f != xa || (proto == "tcp" && port == 81) }},

	{name: "end-port", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - {protocol: TCP, port: 80, endPort: 81}
`, allow: func(f, t npPod, proto string, _ int) bool { return t.ns != "x" || proto == "tcp" }},

	{name: "ports-only", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {port: 81}
`, allow: func(f, t npPod, proto string, port int) bool { return t != xa || (proto == "tcp" && port == 81) }},

	{name: "multiple-policies-union", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-z, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: z}}}]
    ports: [{port: 81, protocol: UDP}]
`, allow: func(f, t npPod, proto string, port int) bool {
		return t != xa || (f.ns == "y" && proto == "tcp" && port == 80) || (f.ns == "z" && proto == "udp" && port == 81)
	}},

	{name: "egress-deny-but-one-pod", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-to-yb, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: b}}
`, allow: func(f, t npPod, _ string, _ int) bool { return f != xa || t == yb }},

	{name: "ingress-and-egress", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: "y"}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {}}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: z}}}]
`, allow: func(f, t npPod, _ string, _ int) bool {
		if t == yb && f.ns != "y" {
			return false
		}
		if f == yb && t.ns != "z" {
			return false
		}
		return true
	}},
}

// npExpand fills the placeholders of a case's policies.
func npExpand(policies, cidr string, ip func(npPod) netip.Addr, subnet func(node string) string) string {
	out := strings.ReplaceAll(policies, "{{cidr}}", cidr)
	for _, p := range npPods() {
		if !strings.Contains(out, p.String()+"}}") {
			continue
		}
		a := ip(p)
		out = strings.ReplaceAll(out, "{{ip "+p.String()+"}}", a.String())
		out = strings.ReplaceAll(out, "{{host "+p.String()+"}}", netip.PrefixFrom(a, a.BitLen()).String())
	}
	for _, n := range []string{"n1", "n2"} {
		if strings.Contains(out, "{{subnet "+n+"}}") {
			out = strings.ReplaceAll(out, "{{subnet "+n+"}}", subnet(n))
		}
	}
	return out
}

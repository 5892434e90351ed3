package lab

// ClusterNetworkPolicy cases for TestNetpolConformance (same world: x, y,
// z × a, b, c; TCP and UDP on 80 and 81), each with its expected matrix
// written from the API's tier semantics, not from podnet's compiler:
// Admin (priority, then name; first matching rule: Accept, Deny, or Pass
// to the next tier), then NetworkPolicy (final for pods it isolates),
// then Baseline, then allow.

func init() { npCases = append(npCases, npTierCases...) }

var (
	xb = npPod{"x", "b"}
	yc = npPod{"y", "c"}
)

var npTierCases = []npCase{
	{name: "cnp-admin-deny-beats-networkpolicy-allow", policies: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: deny-y-to-x}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - action: Deny
    from: [{namespaces: {matchLabels: {ns: "y"}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
`, allow: func(f, t npPod, _ string, _ int) bool { return t.ns != "x" || f.ns != "y" }},

	{name: "cnp-admin-pass-hands-to-networkpolicy", policies: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: pass-y-deny-rest}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}}
  ingress:
  - action: Pass
    from: [{namespaces: {matchLabels: {ns: "y"}}}]
  - action: Deny
    from: [{namespaces: {}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-y-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}]
`, allow: func(f, t npPod, _ string, _ int) bool { return t != xa || f == yb }},

	{name: "cnp-baseline-deny-unless-networkpolicy", policies: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: baseline-deny-x}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-z, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: z}}}]
`, allow: func(f, t npPod, _ string, _ int) bool {
		switch {
		case t == xa:
			return f.ns == "z"
		case t.ns == "x":
			return false
		}
		return true
	}},

	{name: "cnp-priority-then-baseline", policies: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: accept-y}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - action: Accept
    from: [{namespaces: {matchLabels: {ns: "y"}}}]
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: deny-y-b}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - action: Deny
    from: [{pods: {namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}}]
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: baseline-deny-x}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
`, allow: func(f, t npPod, _ string, _ int) bool { return t.ns != "x" || (f.ns == "y" && f != yb) }},

	{name: "cnp-ports-and-ranges", policies: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: z-udp-and-tcp81}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: z}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
    protocols:
    - udp: {destinationPort: {range: {start: 80, end: 81}}}
    - tcp: {destinationPort: {number: 81}}
`, allow: func(f, t npPod, proto string, port int) bool {
		return t.ns != "z" || (proto == "tcp" && port == 80)
	}},

	{name: "cnp-egress-networks", policies: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: x-b-not-to-n2}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: b}}}}
  egress:
  - action: Accept
    to: [{networks: ["{{host y/c}}"]}]
  - action: Deny
    to: [{networks: ["{{subnet n2}}"]}]
    protocols: [{tcp: {destinationPort: {number: 80}}}]
`, allow: func(f, t npPod, proto string, port int) bool {
		return f != xb || t == yc || npNode(t) != "n2" || proto != "tcp" || port != 80
	}},
}

package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
)

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels("app=web,tier=,example.com/team=a")
	if err != nil || fmt.Sprint(got) != "map[app:web example.com/team:a tier:]" {
		t.Fatalf("%v %v", got, err)
	}
	if got, err := ParseLabels(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"app", "=x", "a=b c", "a=1,a=2", "-a=b", "a=" + strings.Repeat("x", 64)} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("ParseLabels(%q) succeeded", bad)
		}
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts("http=tcp/80,dns=UDP/53,sctp/9")
	want := []corev1.ContainerPort{{Name: "http", Protocol: "TCP", ContainerPort: 80}, {Name: "dns", Protocol: "UDP", ContainerPort: 53}, {Protocol: "SCTP", ContainerPort: 9}}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"http=80", "http=icmp/80", "http=tcp/0", "http=tcp/65536", "http=tcp/x", "Bad_Name=tcp/80", "a=tcp/1,a=udp/2"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) succeeded", bad)
		}
	}
}

func TestParseLabelArgs(t *testing.T) {
	c, err := ParseLabelArgs([]string{"a=1", "b-", "c="})
	if err != nil || fmt.Sprint(c.Set) != "map[a:1 c:]" || fmt.Sprint(c.Remove) != "[b]" {
		t.Fatalf("%+v %v", c, err)
	}
	if got := c.Apply(map[string]string{"a": "0", "b": "x", "d": "y"}); fmt.Sprint(got) != "map[a:1 c: d:y]" {
		t.Fatalf("apply: %v", got)
	}
	for _, bad := range [][]string{nil, {"a"}, {"a=1", "a-"}, {"a b=1"}} {
		if _, err := ParseLabelArgs(bad); err == nil {
			t.Errorf("ParseLabelArgs(%q) succeeded", bad)
		}
	}
}

func TestSplitRefAndNetns(t *testing.T) {
	if ns, n, err := SplitRef("web/a.b"); err != nil || ns != "web" || n != "a.b" {
		t.Fatalf("%s %s %v", ns, n, err)
	}
	for _, bad := range []string{"web", "/a", "a/", "a/b/c"} {
		if _, _, err := SplitRef(bad); err == nil {
			t.Errorf("SplitRef(%q) succeeded", bad)
		}
	}
	long := podNetns("lab", strings.Repeat("n", 63), strings.Repeat("p", 253))
	if len(long) > 64 || !strings.HasPrefix(long, "pl-lab-") {
		t.Fatalf("long netns name %q", long)
	}
	if podNetns("lab", "a-b", "c") == podNetns("lab", "a", "b-c") || podNetns("lab", "a", "b") != "pl-lab-a.b" {
		t.Fatal("netns names collide or changed")
	}
	if a, b := podNetns("lab", "n", strings.Repeat("p", 60)+"1"), podNetns("lab", "n", strings.Repeat("p", 60)+"2"); a == b {
		t.Fatal("hashed netns names collide")
	}
}

const multiDoc = `apiVersion: v1
kind: Namespace
metadata:
  name: web
  labels: {team: a}
---
# a comment-only document
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-http, namespace: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 8000, endPort: 8080, protocol: TCP}, {port: http}]
---
apiVersion: v1
kind: List
items:
- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: deny}, spec: {podSelector: {}}}
`

func TestDecodeObjects(t *testing.T) {
	objs, err := DecodeObjects(strings.NewReader(multiDoc))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, describe(o))
	}
	if strings.Join(got, " ") != "namespace/web networkpolicy.networking.k8s.io/allow-http networkpolicy.networking.k8s.io/deny" {
		t.Fatalf("decoded %v", got)
	}
	np := objs[1].(*networkingv1.NetworkPolicy)
	if *np.Spec.Ingress[0].Ports[0].EndPort != 8080 || np.Spec.Ingress[0].Ports[1].Port.StrVal != "http" {
		t.Fatalf("ports %+v", np.Spec.Ingress[0].Ports)
	}
	if objs[2].(*networkingv1.NetworkPolicy).Namespace != "default" {
		t.Fatal("a policy without namespace is not in default")
	}
	// JSON, several objects in a row.
	objs, err = DecodeObjects(strings.NewReader(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}`))
	if err != nil || len(objs) != 2 || objs[1].(*corev1.Namespace).Name != "b" {
		t.Fatalf("json: %v %v", objs, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: x}", `kind "Pod"`},
		{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelecter: {}}", `unknown field "podSelecter"`},
		{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.300/8}}]}]", "spec.egress[0].to[0].ipBlock.cidr"},
		{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  ingress: [{ports: [{protocol: ICMP}]}]", "spec.ingress[0].ports[0].protocol"},
		{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelector: {matchExpressions: [{key: a, operator: Near}]}", "spec.podSelector.matchExpressions[0].operator"},
		{"apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n: : :", "document 2"},
	} {
		if _, err := DecodeObjects(strings.NewReader(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.doc, err, tc.want)
		}
	}
}

const cnpDoc = `apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata:
  name: deny-web
  namespace: ignored
spec:
  tier: Admin
  priority: 10
  subject:
    pods:
      namespaceSelector: {}
      podSelector: {matchLabels: {app: web}}
  ingress:
  - name: deny-from-other
    action: Deny
    from: [{namespaces: {matchLabels: {team: other}}}]
    protocols:
    - tcp: {destinationPort: {number: 80}}
    - udp: {destinationPort: {range: {start: 1000, end: 2000}}}
  egress:
  - action: Accept
    to: [{networks: [10.0.0.0/8]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  egress: [{action: Pass, to: [{pods: {namespaceSelector: {}, podSelector: {}}}]}]
`

func TestDecodeClusterNetworkPolicies(t *testing.T) {
	objs, err := DecodeObjects(strings.NewReader(cnpDoc))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, describe(o))
	}
	if strings.Join(got, " ") != "clusternetworkpolicy.policy.networking.k8s.io/deny-web clusternetworkpolicy.policy.networking.k8s.io/baseline" {
		t.Fatalf("decoded %v", got)
	}
	p := objs[0].(*cnp.ClusterNetworkPolicy)
	if p.Namespace != "" || p.Spec.Priority != 10 || p.Spec.Ingress[0].Protocols[1].UDP.DestinationPort.Range.End != 2000 ||
		p.Spec.Subject.Pods.PodSelector.MatchLabels["app"] != "web" {
		t.Fatalf("decoded %+v", p)
	}
	if b := objs[1].(*cnp.ClusterNetworkPolicy); b.APIVersion != "policy.networking.k8s.io/v1beta1" || b.Spec.Tier != cnp.BaselineTier {
		t.Fatalf("v1alpha2: %+v", b)
	}
	head := "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {name: x}\n"
	for _, tc := range []struct{ spec, want string }{
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{nodes: {}}]}]}", "spec.egress[0].to[0].nodes: Forbidden"},
		{"spec: {tier: Developer, priority: 1, subject: {namespaces: {}}}", "spec.tier"},
		{"spec: {tier: Admin, priority: 1001, subject: {namespaces: {}}}", "spec.priority"},
		{"spec: {tier: Admin, priority: 1, subject: {}}", "spec.subject"},
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}}", "spec.subject"},
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{}]}]}", "spec.ingress[0].from[0]"},
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}, networks: [10.0.0.0/8]}]}]}", "spec.egress[0].to[0]"},
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{networks: [10.0.0.1/8]}]}]}", "spec.egress[0].to[0].networks[0]"},
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 90, end: 80}}}}]}]}",
			"spec.egress[0].protocols[0].tcp.destinationPort.range"},
		{"spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Allow, to: [{namespaces: {}}]}]}", "spec.egress[0].action"},
	} {
		if _, err := DecodeObjects(strings.NewReader(head + tc.spec)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.spec, err, tc.want)
		}
	}
	if _, err := DecodeObjects(strings.NewReader("apiVersion: policy.networking.k8s.io/v1\nkind: ClusterNetworkPolicy\nmetadata: {name: x}\n")); err == nil {
		t.Error("apiVersion v1 accepted")
	}
}

// `lab apply -f` and `lab delete -f` of ClusterNetworkPolicies, on an
// embedded etcd: stored cluster-scoped as v1beta1, replaced, deleted.
func TestApplyDeleteClusterNetworkPolicies(t *testing.T) {
	e, err := embedded.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	l := &Lab{Name: "cnptest", Etcd: Etcd{Endpoints: e.Endpoints()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := l.Apply(ctx, strings.NewReader(cnpDoc), &out); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(ctx, strings.NewReader(cnpDoc), &out); err != nil {
		t.Fatal(err)
	}
	want := "clusternetworkpolicy.policy.networking.k8s.io/deny-web created\nclusternetworkpolicy.policy.networking.k8s.io/baseline created\n" +
		"clusternetworkpolicy.policy.networking.k8s.io/deny-web configured\nclusternetworkpolicy.policy.networking.k8s.io/baseline configured\n"
	if out.String() != want {
		t.Fatalf("apply said %q", out.String())
	}
	cli, err := l.etcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, etcd.ObjectsPrefix("")+"clusternetworkpolicies/baseline")
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"apiVersion":"policy.networking.k8s.io/v1beta1"`) {
		t.Fatalf("stored: %v %v", resp, err)
	}
	o, err := datastore.ReadObjects(ctx, etcd.NewObjectSource(cli, "", nil))
	if err != nil || len(o.ClusterPolicies) != 2 || o.ClusterPolicies[0].Name != "baseline" || len(o.Namespaces) != 0 {
		t.Fatalf("read back: %+v %v", o, err)
	}
	out.Reset()
	err = l.Delete(ctx, strings.NewReader(cnpDoc), &out)
	if err != nil || out.String() != "clusternetworkpolicy.policy.networking.k8s.io/deny-web deleted\nclusternetworkpolicy.policy.networking.k8s.io/baseline deleted\n" {
		t.Fatalf("delete: %v, said %q", err, out.String())
	}
	if err := l.Delete(ctx, strings.NewReader(cnpDoc), io.Discard); err == nil || !strings.Contains(err.Error(), "clusternetworkpolicy.policy.networking.k8s.io/deny-web not found") {
		t.Fatalf("second delete: %v", err)
	}
}

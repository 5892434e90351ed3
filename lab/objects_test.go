package lab

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
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

package etcd_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
)

func client(t *testing.T, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func names(o datastore.Objects) string {
	var s []string
	for _, n := range o.Namespaces {
		s = append(s, "ns:"+n.Name)
	}
	for _, p := range o.Pods {
		s = append(s, "pod:"+p.Namespace+"/"+p.Name+" "+fmt.Sprint(p.Labels))
	}
	for _, p := range o.Policies {
		s = append(s, "np:"+p.Namespace+"/"+p.Name)
	}
	return strings.Join(s, " ")
}

// waitFor waits until the source's objects print as want.
func waitFor(t *testing.T, src *etcd.ObjectSource, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := names(src.Objects())
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects: got %q, want %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestObjectSource(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	cli := client(t, eps)
	const prefix = "/t1"
	mustPut := func(obj any) {
		t.Helper()
		var err error
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = etcd.PutObject(ctx, cli, prefix, o)
		case *corev1.Pod:
			_, err = etcd.PutObject(ctx, cli, prefix, o)
		case *networkingv1.NetworkPolicy:
			_, err = etcd.PutObject(ctx, cli, prefix, o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mustPut(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	mustPut(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "b", Labels: map[string]string{"app": "b"}}})
	// Records that cannot be used: not JSON, too large, a key naming
	// another object, a key that is not an object key. They are skipped.
	for k, v := range map[string]string{
		"/t1/objects/pods/default/junk":          "{",
		"/t1/objects/pods/default/big":           `{"metadata":{"name":"big","namespace":"default","annotations":{"x":"` + strings.Repeat("x", datastore.MaxObjectBytes) + `"}}}`,
		"/t1/objects/pods/default/liar":          `{"metadata":{"name":"other","namespace":"default"}}`,
		"/t1/objects/pods/other/wrongns":         `{"metadata":{"name":"wrongns","namespace":"default"}}`,
		"/t1/objects/networkpolicies/default/np": `{"kind":"Pod","metadata":{"name":"np"}}`,
		"/t1/objects/secrets/x":                  `{}`,
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	src := etcd.NewObjectSource(cli, prefix, nil)
	if src.Synced() || src.Objects().Pods != nil {
		t.Fatal("synced before Run")
	}
	changed := make(chan struct{}, 100)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- src.Run(rctx, func() { changed <- struct{}{} }) }()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no changed() after the first list")
	}
	if !src.Synced() {
		t.Fatal("not synced after changed()")
	}
	waitFor(t, src, "ns:default pod:default/b map[app:b]")
	if bad := src.Bad(); len(bad) != 6 {
		t.Fatalf("bad records: %v", bad)
	}
	// Watch: create, replace, delete.
	mustPut(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a"}})
	mustPut(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ab"}})
	mustPut(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ab", Name: "a"}})
	mustPut(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ab", Name: "deny"}})
	waitFor(t, src, "ns:ab ns:default pod:ab/a map[] pod:default/a map[] pod:default/b map[app:b] np:ab/deny")
	mustPut(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "b", Labels: map[string]string{"app": "c"}}})
	if _, err := etcd.DeleteObject(ctx, cli, prefix, etcd.KindPod, "default", "a"); err != nil {
		t.Fatal(err)
	}
	// A good record turned bad disappears.
	if _, err := cli.Put(ctx, "/t1/objects/pods/ab/a", "not json"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, src, "ns:ab ns:default pod:default/b map[app:c] np:ab/deny")
	// A bad one turned good appears.
	if _, err := cli.Put(ctx, "/t1/objects/pods/default/junk", `{"metadata":{"name":"junk"}}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, src, "ns:ab ns:default pod:default/b map[app:c] pod:default/junk map[] np:ab/deny")
	// A pod that finishes is gone to policy (its address may be reused).
	finished := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "junk"}}
	finished.Status.Phase = corev1.PodSucceeded
	mustPut(finished)
	waitFor(t, src, "ns:ab ns:default pod:default/b map[app:c] np:ab/deny")
	mustPut(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "junk"}})
	waitFor(t, src, "ns:ab ns:default pod:default/b map[app:c] pod:default/junk map[] np:ab/deny")
	// Compaction: the watch restarts from a fresh list.
	resp, err := cli.Put(ctx, "/t1/objects/namespaces/zz", `{"metadata":{"name":"zz"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/t1/objects/namespaces/zz"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, src, "ns:ab ns:default pod:default/b map[app:c] pod:default/junk map[] np:ab/deny")
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
	// Get reads what Put wrote, with apiVersion and kind.
	obj, err := etcd.GetObject(ctx, cli, prefix, etcd.KindNetworkPolicy, "ab", "deny")
	if np, ok := obj.(*networkingv1.NetworkPolicy); err != nil || !ok || np.Kind != "NetworkPolicy" || np.APIVersion != "networking.k8s.io/v1" {
		t.Fatalf("get: %#v %v", obj, err)
	}
	if obj, err := etcd.GetObject(ctx, cli, prefix, etcd.KindPod, "ab", "nope"); obj != nil || err != nil {
		t.Fatalf("get absent: %v %v", obj, err)
	}
}

func TestPutObjectValidates(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	cli := client(t, eps)
	tcp, bogus := corev1.ProtocolTCP, corev1.Protocol("ICMP")
	port := func(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }
	namedPort := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	end := int32(90)
	for _, tc := range []struct {
		np   networkingv1.NetworkPolicySpec
		want string
	}{
		{networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, EndPort: &end}}}}}, "spec.ingress[0].ports[0].endPort"},
		{networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: namedPort("http"), EndPort: &end}}}}}, "spec.ingress[0].ports[0].endPort"},
		{networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &bogus, Port: port(80)}}}}}, "spec.egress[0].ports[0].protocol"},
		{networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}}}}, "spec.egress[0].to[0].ipBlock.cidr"},
		{networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"11.0.0.0/16"}}}}}}}, "spec.egress[0].to[0].ipBlock.except[0]"},
		{networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{}}}}}, "spec.egress[0].to[0]"},
		{networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Like"}}}}, "spec.podSelector.matchExpressions[0].operator"},
		{networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Sideways"}}, "spec.policyTypes[0]"},
	} {
		_, err := etcd.PutObject(ctx, cli, "", &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p"}, Spec: tc.np})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want one naming %s", tc.np, err, tc.want)
		}
	}
	for _, obj := range []struct {
		o    any
		want string
	}{
		{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "Bad_NS"}}, "metadata.name"},
		{&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, "metadata.namespace"},
		{&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "d", Name: "p", Labels: map[string]string{"a": "b c"}}}, "metadata.labels"},
		{&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "d", Name: "a/b"}}, "metadata.name"},
	} {
		var err error
		switch o := obj.o.(type) {
		case *corev1.Namespace:
			_, err = etcd.PutObject(ctx, cli, "", o)
		case *corev1.Pod:
			_, err = etcd.PutObject(ctx, cli, "", o)
		case *networkingv1.NetworkPolicy:
			_, err = etcd.PutObject(ctx, cli, "", o)
		}
		if err == nil || !strings.Contains(err.Error(), obj.want) {
			t.Errorf("%+v: err %v, want one naming %s", obj.o, err, obj.want)
		}
	}
	// A good policy is created, then replaced.
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ok"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(80), EndPort: &end}}}}}}
	for _, want := range []bool{true, false} {
		if created, err := etcd.PutObject(ctx, cli, "", np); err != nil || created != want {
			t.Fatalf("put: created %v (want %v), %v", created, want, err)
		}
	}
	if np.Kind != "" {
		t.Fatal("PutObject modified its argument")
	}
	if ok, err := etcd.DeleteObject(ctx, cli, "", etcd.KindNetworkPolicy, "default", "ok"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
}

// ClusterNetworkPolicies: cluster-scoped keys clusternetworkpolicies/NAME,
// v1beta1 written, v1alpha2 records read too, listed and watched.
func TestObjectSourceClusterPolicies(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	cli := client(t, eps)
	const prefix = "/t3"
	cnpOf := func(name string, tier cnp.Tier, prio int32) *cnp.ClusterNetworkPolicy {
		return &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: cnp.ClusterNetworkPolicySpec{Tier: tier, Priority: prio,
				Subject: cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
				Ingress: []cnp.ClusterNetworkPolicyIngressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
					From: []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}}}}}
	}
	mustPut := func(p *cnp.ClusterNetworkPolicy) {
		t.Helper()
		if _, err := etcd.PutObject(ctx, cli, prefix, p); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(cnpOf("b", cnp.AdminTier, 10))
	if _, err := etcd.PutObject(ctx, cli, prefix, cnpOf("bad", cnp.AdminTier, 5000)); err == nil || !strings.Contains(err.Error(), "spec.priority") {
		t.Fatalf("priority 5000 stored: %v", err)
	}
	for k, v := range map[string]string{
		"/t3/objects/clusternetworkpolicies/alpha": `{"apiVersion":"policy.networking.k8s.io/v1alpha2","kind":"ClusterNetworkPolicy","metadata":{"name":"alpha"},"spec":{"tier":"Baseline","priority":3}}`,
		"/t3/objects/clusternetworkpolicies/v1":    `{"apiVersion":"policy.networking.k8s.io/v1","kind":"ClusterNetworkPolicy","metadata":{"name":"v1"}}`,
		"/t3/objects/clusternetworkpolicies/nsd":   `{"metadata":{"name":"nsd","namespace":"default"}}`,
		"/t3/objects/clusternetworkpolicies/x/y":   `{"metadata":{"name":"y"}}`,
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	src := etcd.NewObjectSource(cli, prefix, nil)
	changed := make(chan struct{}, 100)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- src.Run(rctx, func() { changed <- struct{}{} }) }()
	cnps := func() string {
		var s []string
		for _, p := range src.Objects().ClusterPolicies {
			s = append(s, fmt.Sprintf("%s:%s/%d", p.Name, p.Spec.Tier, p.Spec.Priority))
		}
		return strings.Join(s, " ")
	}
	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := cnps(); got != want; got = cnps() {
			if time.Now().After(deadline) {
				t.Fatalf("cluster policies: got %q, want %q", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("alpha:Baseline/3 b:Admin/10")
	if bad := src.Bad(); len(bad) != 3 {
		t.Fatalf("bad records: %v", bad)
	}
	mustPut(cnpOf("a", cnp.BaselineTier, 1))
	mustPut(cnpOf("b", cnp.BaselineTier, 11))
	wait("a:Baseline/1 alpha:Baseline/3 b:Baseline/11")
	if ok, err := etcd.DeleteObject(ctx, cli, prefix, etcd.KindClusterNetworkPolicy, "", "alpha"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	wait("a:Baseline/1 b:Baseline/11")
	if o := src.Objects(); len(o.Policies) != 0 || len(o.Namespaces) != 0 {
		t.Fatalf("other objects: %s", names(o))
	}
	if m := src.Objects().Model(); len(m.ClusterPolicies) != 2 || m.ClusterPolicies[0].Name != "a" {
		t.Fatalf("model's cluster policies: %v", m.ClusterPolicies)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
	obj, err := etcd.GetObject(ctx, cli, prefix, etcd.KindClusterNetworkPolicy, "ignored", "b")
	if p, ok := obj.(*cnp.ClusterNetworkPolicy); err != nil || !ok || p.Kind != "ClusterNetworkPolicy" || p.APIVersion != "policy.networking.k8s.io/v1beta1" {
		t.Fatalf("get: %#v %v", obj, err)
	}
	if key, _ := etcd.ObjectKey(prefix, etcd.KindClusterNetworkPolicy, "", "b"); key != "/t3/objects/clusternetworkpolicies/b" {
		t.Fatalf("key %q", key)
	}
}

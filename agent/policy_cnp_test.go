package agent

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/datastore"
)

// The namespaces whose new pods wait for their policy: those with
// NetworkPolicies and those a ClusterNetworkPolicy's subject selects.
func TestPolicyNamespacesClusterPolicies(t *testing.T) {
	ns := func(name string, l map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	}
	o := datastore.Objects{
		Namespaces: []*corev1.Namespace{ns("a", map[string]string{"team": "x"}), ns("b", nil), ns("c", map[string]string{"team": "y"})},
		Policies:   []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "p"}}},
	}
	check := func(want string) {
		t.Helper()
		if got := strings.Join(policyNamespaces(o), ","); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	check("b")
	o.ClusterPolicies = []*cnp.ClusterNetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec: cnp.ClusterNetworkPolicySpec{Subject: cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}}}}}
	check("a,b")
	o.ClusterPolicies = append(o.ClusterPolicies, &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "y"},
		Spec: cnp.ClusterNetworkPolicySpec{Subject: cnp.ClusterNetworkPolicySubject{Pods: &cnp.NamespacedPod{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "y"}}}}}})
	check("a,b,c")
	o.ClusterPolicies = []*cnp.ClusterNetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "empty"}}}
	check("a,b,c")
	if m := o.Model(); len(m.ClusterPolicies) != 1 {
		t.Fatalf("model: %+v", m.ClusterPolicies)
	}
}

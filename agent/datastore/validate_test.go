package datastore

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestValidate(t *testing.T) {
	port := intstr.FromInt32(80)
	for _, tc := range []struct {
		err  error
		want string // "" = valid
	}{
		{ValidateNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{NamespaceNameLabel: "web"}}}), ""},
		{ValidateNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a.b"}}), "metadata.name"},
		{ValidatePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "a.b-1"},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: "TCP"}}}}},
			Status: corev1.PodStatus{PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}}}), ""},
		{ValidatePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "a"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "x", ContainerPort: 80, Protocol: "ICMP"}}}}}}), "spec.containers[0].ports[0].protocol"},
		{ValidatePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "a"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{ContainerPort: 0}}}}}}), "spec.containers[0].ports[0].containerPort"},
		{ValidatePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "a"}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "x"}}}}), "status.podIPs[0].ip"},
		{ValidatePolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}, {NamespaceSelector: &metav1.LabelSelector{}}}}}}}), ""},
		{ValidatePolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: &metav1.LabelSelector{}}}}}}}), "spec.ingress[0].from[0]"},
		{ValidatePolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Ingress", "Ingress"}}}), "spec.policyTypes[1]"},
		{ValidatePolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8", Except: []string{"10.0.0.0/16"}}}}}}}}), "spec.ingress[0].from[0].ipBlock.except[0]"},
	} {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("valid object refused: %v", tc.err)
		case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)):
			t.Errorf("error %v, want one naming %s", tc.err, tc.want)
		}
	}
}

package kubernetes_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/kubernetes"
	"github.com/podnet/podnet/agent/datastore/kubernetes/kubetest"
)

// objectsIn prints the source's objects in namespace ns.
func objectsIn(o datastore.Objects, ns string) string {
	var s []string
	for _, n := range o.Namespaces {
		if n.Name == ns {
			s = append(s, "ns:"+n.Name)
		}
	}
	for _, p := range o.Pods {
		if p.Namespace == ns {
			s = append(s, fmt.Sprintf("pod:%s %v", p.Name, p.Labels))
		}
	}
	for _, p := range o.Policies {
		if p.Namespace == ns {
			s = append(s, "np:"+p.Name)
		}
	}
	return strings.Join(s, " ")
}

// TestKubernetesObjectSource runs the informers as the RBAC-limited agent
// user, so the documented ClusterRole is what is tested.
func TestKubernetesObjectSource(t *testing.T) {
	srv := kubetest.Shared(t)
	ctx := ctxT(t, 2*time.Minute)
	admin, err := srv.Client(kubetest.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "objtest"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager creates the default service account the
	// admission plugin looks for.
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "x",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}}}
	if _, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	s := agentStore(t, srv)
	src := s.ObjectSource()
	if src.Synced() || src.Objects().Pods != nil {
		t.Fatal("synced before Run")
	}
	changed := make(chan struct{}, 1000)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- src.Run(rctx, func() { changed <- struct{}{} }) }()
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no changed() after the caches synced")
	}
	if !src.Synced() {
		t.Fatal("changed() before Synced")
	}
	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := objectsIn(src.Objects(), ns)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("objects in %s: got %q, want %q", ns, got, want)
			}
			select {
			case <-changed:
			case <-time.After(time.Second):
			}
		}
	}
	wait("ns:objtest pod:web map[app:web]")
	got := src.Objects().Pods
	for _, p := range got {
		if p.Namespace == ns && (p.Node != "n1" || len(p.Ports) == 0 || p.Ports[0].Name != "http") {
			t.Fatalf("pod not converted as policy reads it: %+v", p)
		}
	}

	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := admin.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("ns:objtest pod:web map[app:web] np:deny")
	pod, err = admin.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Labels["tier"] = "front"
	if _, err := admin.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("ns:objtest pod:web map[app:web tier:front] np:deny")
	if err := admin.NetworkingV1().NetworkPolicies(ns).Delete(ctx, "deny", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin.CoreV1().Pods(ns).Delete(ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	wait("ns:objtest")
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
}

var _ datastore.ObjectSource = (*kubernetes.ObjectSource)(nil)

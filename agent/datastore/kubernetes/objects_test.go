package kubernetes_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	cnpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/kubernetes"
	"github.com/podnet/podnet/agent/datastore/kubernetes/kubetest"
	"github.com/podnet/podnet/deploy"
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

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ClusterNetworkPolicies: without their CRD the source syncs (NetworkPolicy
// does not wait) with none and says why; once deploy.CRDs is installed,
// created, changed and deleted ones arrive, read as the RBAC-limited agent.
func TestKubernetesObjectSourceClusterPolicies(t *testing.T) {
	srv := kubetest.Shared(t)
	ctx := ctxT(t, 3*time.Minute)
	defer func(d time.Duration) { kubernetes.ClusterPolicyRetry = d }(kubernetes.ClusterPolicyRetry)
	kubernetes.ClusterPolicyRetry = 200 * time.Millisecond
	admin, err := cnpclient.NewForConfig(srv.Config(kubetest.AdminUser))
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.PolicyV1beta1().ClusterNetworkPolicies().List(ctx, metav1.ListOptions{})
	installed := err == nil // by an earlier run (-count) on the shared server
	if !installed && !apierrors.IsNotFound(err) {
		t.Fatalf("listing ClusterNetworkPolicies without their CRD: %v, want NotFound", err)
	}

	cli, err := srv.Client(kubetest.AgentUser)
	if err != nil {
		t.Fatal(err)
	}
	pcli, err := cnpclient.NewForConfig(srv.Config(kubetest.AgentUser))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	src := kubernetes.NewObjectSource(cli, pcli, slog.New(slog.NewTextHandler(&logs, nil)))
	changed := make(chan struct{}, 1000)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- src.Run(rctx, func() { changed <- struct{}{} }) }()
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no changed() after the caches synced")
	}
	names := func() string {
		var s []string
		for _, p := range src.Objects().ClusterPolicies {
			s = append(s, fmt.Sprintf("%s:%s/%d", p.Name, p.Spec.Tier, p.Spec.Priority))
		}
		return strings.Join(s, " ")
	}
	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := names()
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ClusterPolicies: got %q, want %q", got, want)
			}
			select {
			case <-changed:
			case <-time.After(time.Second):
			}
		}
	}
	if !installed {
		if o := src.Objects(); o.ClusterPolicies == nil || len(o.ClusterPolicies) != 0 || o.Namespaces == nil {
			t.Fatalf("without the CRD: %+v", o)
		}
		if !strings.Contains(logs.String(), "not installed") {
			t.Fatalf("log does not say the CRD is missing: %s", logs.String())
		}
		time.Sleep(time.Second) // a few retries: logged once
		if n := strings.Count(logs.String(), "ClusterNetworkPolicies ignored"); n != 1 {
			t.Fatalf("logged %d times: %s", n, logs.String())
		}
		if err := srv.InstallCRDs(ctx, deploy.CRDs); err != nil {
			t.Fatal(err)
		}
	}

	pol := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-egress"},
		Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 10,
			Subject: cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"0.0.0.0/0"}}}}}}}
	if err := datastore.ValidateClusterPolicy(pol); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PolicyV1beta1().ClusterNetworkPolicies().Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("deny-egress:Admin/10")
	if !installed && !strings.Contains(logs.String(), "read now") {
		t.Fatalf("log does not say ClusterNetworkPolicies are read: %s", logs.String())
	}
	pol, err = admin.PolicyV1beta1().ClusterNetworkPolicies().Get(ctx, "deny-egress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pol.Spec.Tier, pol.Spec.Priority = cnp.BaselineTier, 20
	if _, err := admin.PolicyV1beta1().ClusterNetworkPolicies().Update(ctx, pol, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("deny-egress:Baseline/20")
	if err := admin.PolicyV1beta1().ClusterNetworkPolicies().Delete(ctx, "deny-egress", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("")

	// The apiserver (the CRD's schema and CEL rules) and
	// ValidateClusterPolicy agree on what is invalid.
	for name, mut := range map[string]func(p *cnp.ClusterNetworkPolicy){
		"bad-priority": func(p *cnp.ClusterNetworkPolicy) { p.Spec.Priority = 1001 },
		"bad-tier":     func(p *cnp.ClusterNetworkPolicy) { p.Spec.Tier = "Developer" },
		"two-subjects": func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Subject.Pods = &cnp.NamespacedPod{}
		},
		"no-subject": func(p *cnp.ClusterNetworkPolicy) { p.Spec.Subject.Namespaces = nil },
		"two-peer-fields": func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Egress[0].To[0].Namespaces = &metav1.LabelSelector{}
		},
		"unmasked-cidr": func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To[0].Networks = []cnp.CIDR{"10.0.0.1/8"} },
		"range-start-end": func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Egress[0].Protocols = []cnp.ClusterNetworkPolicyProtocol{{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{
				DestinationPort: &cnp.Port{Range: &cnp.PortRange{Start: 80, End: 80}}}}}
		},
		"tcp-no-port": func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Egress[0].Protocols = []cnp.ClusterNetworkPolicyProtocol{{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{}}}
		},
		"two-protocols": func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Egress[0].Protocols = []cnp.ClusterNetworkPolicyProtocol{{
				TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnp.Port{Number: 80}},
				UDP: &cnp.ClusterNetworkPolicyProtocolUDP{DestinationPort: &cnp.Port{Number: 53}}}}
		},
		"bad-action": func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].Action = "Allow" },
		"no-peers":   func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To = nil },
	} {
		p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *pol.Spec.DeepCopy()}
		mut(p)
		verr := datastore.ValidateClusterPolicy(p)
		_, aerr := admin.PolicyV1beta1().ClusterNetworkPolicies().Create(ctx, p, metav1.CreateOptions{})
		if verr == nil || aerr == nil {
			t.Errorf("%s: ValidateClusterPolicy: %v; apiserver: %v; want both to refuse", name, verr, aerr)
		}
		if aerr == nil {
			admin.PolicyV1beta1().ClusterNetworkPolicies().Delete(ctx, name, metav1.DeleteOptions{})
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
}

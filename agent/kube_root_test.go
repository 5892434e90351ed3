package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/podnet/podnet/agent/datastore/kubernetes"
	"github.com/podnet/podnet/agent/datastore/kubernetes/kubetest"
	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/agent/overlay"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/roottest"
)

// kubeCluster is the namespaces lab of agent_root_test.go with the
// kubernetes datastore: a real kube-apiserver, the agents as the
// RBAC-limited podnet-agent user, and a Node object per node whose
// spec.podCIDRs the test allocates (as kube-controller-manager would).
type kubeCluster struct {
	*cluster
	srv   *kubetest.Server
	admin *k8s.Clientset
	count int // Nodes created
}

func newKubeCluster(t *testing.T, backend string, v6 bool) *kubeCluster {
	c := newCluster(t, backend) // root check, fabric (its etcd goes unused)
	c.v6 = v6
	srv := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	must(t, srv.GrantAgent(ctx))
	kubeconfig, err := srv.Kubeconfig(kubetest.AgentUser)
	must(t, err)
	c.kubeconfig = kubeconfig
	admin, err := srv.Client(kubetest.AdminUser)
	must(t, err)
	kc := &kubeCluster{cluster: c, srv: srv, admin: admin}
	c.beforeStart = kc.createNode
	return kc
}

// podCIDRs is the i-th node's allocation.
func (c *kubeCluster) podCIDRs(i int) []string {
	out := []string{fmt.Sprintf("10.244.%d.0/24", i)}
	if c.v6 {
		out = append(out, fmt.Sprintf("fd00:244:0:%x::/64", i))
	}
	return out
}

// createKubeNode registers n as a Node with its pod CIDRs allocated, unless
// n.name starts with "late" (the test allocates them later).
func (c *kubeCluster) createNode(n *node) {
	t := c.t
	c.count++
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}
	if !strings.HasPrefix(n.name, "late") {
		node.Spec.PodCIDRs = c.podCIDRs(c.count)
		node.Spec.PodCIDR = node.Spec.PodCIDRs[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, err := c.admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	must(t, err)
	created.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated",
		LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now(),
	}}
	_, err = c.admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	must(t, err)
}

// TestAgentsKubernetes: two nodes on different segments, dual-stack, over
// vxlan with the kubernetes datastore: subnets are the Nodes' podCIDRs,
// the agents publish annotations and clear NetworkUnavailable, pods reach
// each other; a node whose podCIDRs come late waits, then joins; a deleted
// Node disappears from the others' routes.
func TestAgentsKubernetes(t *testing.T) {
	kc := newKubeCluster(t, "vxlan", true)
	c := kc.cluster
	podCIDRs := kc.podCIDRs
	a, b := c.addNode("a", 0, 1), c.addNode("b", 1, 2)
	c.addPod(a)
	c.addPod(b)
	for i, n := range []*node{a, b} {
		st := waitState(t, n)
		want := podCIDRs(i + 1)
		if len(st.Subnets) != 2 || st.Subnets[0].String() != want[0] || st.Subnets[1].String() != want[1] {
			t.Fatalf("node %s state subnets %v, want its podCIDRs %v", n.name, st.Subnets, want)
		}
	}
	reach(t, a, b)
	reach(t, b, a)
	bigDF(t, a, b)
	roottest.Eventually(t, 15*time.Second, "ping6 a pod -> b pod", func() error {
		_, err := probe.Ping(a.pod, b.podIP6.AsSlice(), time.Second)
		return err
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range []*node{a, b} {
		kn, err := kc.admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		must(t, err)
		if got := kn.Annotations[kubernetes.AnnotationUnderlayIPs]; got != n.ip.String() {
			t.Fatalf("node %s %s = %q, want %s", n.name, kubernetes.AnnotationUnderlayIPs, got, n.ip)
		}
		if got, want := kn.Annotations[kubernetes.AnnotationVtepMAC], overlay.VtepMAC(n.name, 1).String(); got != want {
			t.Fatalf("node %s vtep-mac %q, want %s", n.name, got, want)
		}
		ok := false
		for _, cond := range kn.Status.Conditions {
			if cond.Type == corev1.NodeNetworkUnavailable {
				ok = cond.Status == corev1.ConditionFalse && cond.Reason == kubernetes.ConditionReason
			}
		}
		if !ok {
			t.Fatalf("node %s: NetworkUnavailable not cleared: %+v", n.name, kn.Status.Conditions)
		}
	}

	// A node without pod CIDRs waits (no state file), then joins when
	// they are allocated.
	late := c.addNode("late", 0, 3)
	time.Sleep(2 * time.Second)
	if _, err := nodestate.Read(late.stateDir); err == nil {
		t.Fatal("node without podCIDRs wrote its state")
	}
	cidrs := podCIDRs(9)
	patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q,%q]}}`, cidrs[0], cidrs[0], cidrs[1])
	_, err := kc.admin.CoreV1().Nodes().Patch(ctx, "late", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	must(t, err)
	if st := waitState(t, late); st.Subnets[0].String() != cidrs[0] {
		t.Fatalf("late node leased %v, want %s", st.Subnets, cidrs[0])
	}
	c.addPod(late)
	reach(t, late, b)
	reach(t, a, late)

	// Node b is deleted from the cluster: a drops its route and FDB entry.
	bsub := waitState(t, b).Subnets[0]
	c.stop(b)
	must(t, kc.admin.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}))
	bmac := overlay.VtepMAC("b", 1).String()
	roottest.Eventually(t, 10*time.Second, "b removed from a", func() error {
		if _, ok := routesOf(t, a)[bsub.String()]; ok {
			return errors.New("route to b still there")
		}
		if _, ok := fdbOf(t, a)[bmac]; ok {
			return errors.New("fdb entry of b still there")
		}
		return nil
	})
	reach(t, a, late)
}

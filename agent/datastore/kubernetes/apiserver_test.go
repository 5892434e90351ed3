package kubernetes_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/kubernetes"
	"github.com/podnet/podnet/agent/datastore/kubernetes/kubetest"
	"github.com/podnet/podnet/internal/roottest"
)

var (
	pool4 = datastore.Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24}
	pool6 = datastore.Pool{CIDR: netip.MustParsePrefix("fd00:244::/48"), SubnetLen: 64}
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createNode creates a Node with the given pod CIDRs (none = not yet
// allocated) and NetworkUnavailable=True, as a cloud route controller or
// kubelet leaves it.
func createNode(t *testing.T, cli k8s.Interface, name string, cidrs ...string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Spec.PodCIDRs = cidrs
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	n, err := cli.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated",
		LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now(),
	}, {
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now(),
	}}
	if _, err := cli.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// agentStore opens a Store as the RBAC-limited podnet-agent user.
func agentStore(t *testing.T, srv *kubetest.Server) *kubernetes.Store {
	t.Helper()
	kc, err := srv.Kubeconfig(kubetest.AgentUser)
	if err != nil {
		t.Fatal(err)
	}
	s, err := kubernetes.New(context.Background(), kubernetes.Options{Kubeconfig: kc, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// next waits for an event matching ok, skipping others.
func next(t *testing.T, ch <-chan datastore.Event, what string, ok func(datastore.Event) bool) datastore.Event {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, open := <-ch:
			if !open {
				t.Fatalf("%s: watch closed", what)
			}
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no event within 20s", what)
		}
	}
}

func TestKubernetesStore(t *testing.T) {
	srv := kubetest.Shared(t)
	ctx := ctxT(t, 2*time.Minute)
	admin, err := srv.Client(kubetest.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	createNode(t, admin, "a", "10.244.1.0/24", "fd00:244:0:1::/64")
	createNode(t, admin, "b")                      // pod CIDRs come later
	createNode(t, admin, "other", "10.244.9.0/24") // never runs podnet

	a, b := agentStore(t, srv), agentStore(t, srv)
	pools := []datastore.Pool{pool4, pool6}

	la, err := a.Lease(ctx, datastore.LeaseRequest{Node: "a", Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:0:1::/64")}; !slices.Equal(la.Subnets, want) {
		t.Fatalf("a leased %v, want %v", la.Subnets, want)
	}

	// b waits in Lease until its pod CIDRs are set.
	type res struct {
		l   *datastore.Lease
		err error
	}
	bDone := make(chan res, 1)
	go func() {
		l, err := b.Lease(ctx, datastore.LeaseRequest{Node: "b", Pools: pools})
		bDone <- res{l, err}
	}()
	select {
	case r := <-bDone:
		t.Fatalf("b leased before it had pod CIDRs: %+v %v", r.l, r.err)
	case <-time.After(time.Second):
	}
	// The watch of a starts before b publishes.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wa, err := a.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	patch := `{"spec":{"podCIDR":"10.244.2.0/24","podCIDRs":["10.244.2.0/24","fd00:244:0:2::/64"]}}`
	if _, err := admin.CoreV1().Nodes().Patch(ctx, "b", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	r := <-bDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.l.Subnets[0] != netip.MustParsePrefix("10.244.2.0/24") || r.l.Subnets[1] != netip.MustParsePrefix("fd00:244:0:2::/64") {
		t.Fatalf("b leased %v", r.l.Subnets)
	}

	infoA := datastore.NodeInfo{Name: "a", UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, VtepMAC: "0e:00:00:00:00:0a", Subnets: la.Subnets, Backend: "vxlan"}
	infoB := datastore.NodeInfo{Name: "b", UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, VtepMAC: "0e:00:00:00:00:0b", Subnets: r.l.Subnets, Backend: "vxlan"}
	if err := a.Publish(ctx, datastore.NodeInfo{Name: "b"}); err == nil {
		t.Fatal("a published for b")
	}
	if err := a.Publish(ctx, infoA); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, infoB); err != nil {
		t.Fatal(err)
	}

	// a's watch sees b (and itself), with underlay IP and MAC; never the
	// node that does not run podnet.
	ev := next(t, wa, "a sees b", func(ev datastore.Event) bool {
		if ev.Name == "other" {
			t.Fatalf("event for a node without podnet annotations: %+v", ev)
		}
		return ev.Name == "b"
	})
	if ev.Type != datastore.Put || ev.Node == nil || ev.Node.UnderlayIPs[0] != infoB.UnderlayIPs[0] || ev.Node.VtepMAC != infoB.VtepMAC || !slices.Equal(ev.Node.Subnets, infoB.Subnets) {
		t.Fatalf("a saw %+v", ev)
	}
	// b's watch (started late) gets a's record as its first Put.
	wb, err := b.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	ev = next(t, wb, "b sees a", func(ev datastore.Event) bool { return ev.Name == "a" })
	if ev.Type != datastore.Put || ev.Node.VtepMAC != infoA.VtepMAC || ev.Node.UnderlayIPs[0] != infoA.UnderlayIPs[0] {
		t.Fatalf("b saw %+v", ev)
	}

	// Both List the two published nodes, sorted.
	roottest.Eventually(t, 20*time.Second, "both nodes listed", func() error {
		snap, err := b.List(ctx)
		if err != nil {
			return err
		}
		l := snap.Nodes
		if len(l) != 2 || l[0].Name != "a" || l[1].Name != "b" || l[0].VtepMAC != infoA.VtepMAC {
			return fmt.Errorf("list %+v", l)
		}
		return nil
	})

	// Annotations and the cleared NetworkUnavailable condition are on
	// the Node objects; the other conditions are untouched.
	for _, name := range []string{"a", "b"} {
		n, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Annotations[kubernetes.AnnotationBackend] != "vxlan" || n.Annotations[kubernetes.AnnotationVtepMAC] == "" || n.Annotations[kubernetes.AnnotationUnderlayIPs] == "" {
			t.Fatalf("node %s annotations %v", name, n.Annotations)
		}
		var netCond, ready *corev1.NodeCondition
		for i, c := range n.Status.Conditions {
			switch c.Type {
			case corev1.NodeNetworkUnavailable:
				netCond = &n.Status.Conditions[i]
			case corev1.NodeReady:
				ready = &n.Status.Conditions[i]
			}
		}
		if netCond == nil || netCond.Status != corev1.ConditionFalse || netCond.Reason != kubernetes.ConditionReason {
			t.Fatalf("node %s NetworkUnavailable %+v", name, netCond)
		}
		if ready == nil || ready.Status != corev1.ConditionTrue {
			t.Fatalf("node %s Ready condition lost: %+v", name, n.Status.Conditions)
		}
	}

	// Deleting a node that never published is no event (checked below).
	if err := admin.CoreV1().Nodes().Delete(ctx, "other", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Publishing again with a changed record (host-gw: no MAC) is a Put
	// without MAC; publishing the same record is no write.
	infoB2 := infoB
	infoB2.VtepMAC, infoB2.Backend = "", "host-gw"
	if err := b.Publish(ctx, infoB2); err != nil {
		t.Fatal(err)
	}
	ev = next(t, wa, "a sees b change", func(ev datastore.Event) bool {
		if ev.Name == "other" {
			t.Fatalf("event for a node without podnet annotations: %+v", ev)
		}
		return ev.Name == "b"
	})
	if ev.Type != datastore.Put || ev.Node.VtepMAC != "" || ev.Node.Backend != "host-gw" {
		t.Fatalf("a saw %+v", ev)
	}
	n, _ := admin.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{})
	rv := n.ResourceVersion
	roottest.Eventually(t, 20*time.Second, "b's cache has its change", func() error {
		snap, _ := b.List(ctx)
		for _, x := range snap.Nodes {
			if x.Name == "b" && x.Backend == "host-gw" {
				return nil
			}
		}
		return fmt.Errorf("list %+v", snap.Nodes)
	})
	if err := b.Publish(ctx, infoB2); err != nil {
		t.Fatal(err)
	}
	if n, _ := admin.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{}); n.ResourceVersion != rv {
		t.Fatalf("unchanged publish wrote the node (rv %s -> %s)", rv, n.ResourceVersion)
	}

	// Deleting Node b: a's watch delivers the removal, b's lease expires.
	if err := admin.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ev = next(t, wa, "a sees b deleted", func(ev datastore.Event) bool { return ev.Name == "b" })
	if ev.Type != datastore.Delete {
		t.Fatalf("a saw %+v, want delete", ev)
	}
	select {
	case <-r.l.Expired:
	case <-time.After(10 * time.Second):
		t.Fatal("b's lease did not expire when its Node was deleted")
	}
	select {
	case <-la.Expired:
		t.Fatal("a's lease expired")
	default:
	}
	roottest.Eventually(t, 20*time.Second, "b gone from List", func() error {
		snap, err := a.List(ctx)
		l := snap.Nodes
		if err != nil || len(l) != 1 || l[0].Name != "a" {
			return fmt.Errorf("list %+v %v", l, err)
		}
		return nil
	})

	// Watch ends (channel closed) with its context.
	wcancel()
	for range wa {
	}
}

// TestKubernetesLeaseErrors: a node CIDR outside the cluster CIDR or a
// missing family is an error naming the fix.
func TestKubernetesLeaseErrors(t *testing.T) {
	srv := kubetest.Shared(t)
	ctx := ctxT(t, time.Minute)
	admin, err := srv.Client(kubetest.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	createNode(t, admin, "v4only", "10.244.5.0/24")
	createNode(t, admin, "outside", "10.99.0.0/24")
	s := agentStore(t, srv)
	if _, err := s.Lease(ctx, datastore.LeaseRequest{Node: "v4only", Pools: []datastore.Pool{pool4, pool6}}); err == nil {
		t.Fatal("v4-only node leased an IPv6 pool")
	} else {
		t.Log(err)
	}
	if _, err := s.Lease(ctx, datastore.LeaseRequest{Node: "outside", Pools: []datastore.Pool{pool4}}); err == nil {
		t.Fatal("node outside the cluster CIDR leased")
	} else {
		t.Log(err)
	}
	if err := s.Publish(ctx, datastore.NodeInfo{Name: "v4only"}); err != datastore.ErrNoLease {
		t.Fatalf("publish without lease: %v", err)
	}
	// A missing Node: Lease waits until ctx ends and says why.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = s.Lease(short, datastore.LeaseRequest{Node: "nosuch", Pools: []datastore.Pool{pool4}})
	if err == nil {
		t.Fatal("leased a missing node")
	}
	t.Log(err)
}

func TestMain(m *testing.M) {
	code := m.Run()
	kubetest.CloseShared()
	os.Exit(code)
}

package lab

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podnet/podnet/agent/datastore/etcd"
)

// TestLabDualStack: `up --ipv6` gives the agents both cluster CIDRs, each
// node a subnet of each family and each pod an address of each; the Pod
// objects carry both; lab.json records the IPv6 range; check passes with
// every pod reaching every other pod over IPv6 (across nodes over VXLAN on
// the IPv4 underlay), seen with its own IPv6 address.
func TestLabDualStack(t *testing.T) {
	t.Parallel()
	l := upLabWith(t, Options{Nodes: 2, PodsPerNode: 2, Backend: VXLAN, IPv6: true})
	if !l.ClusterCIDR6.IsValid() || l.ClusterCIDR6 != clusterCIDR6(plan(l.Name)) {
		t.Fatalf("clusterCIDR6 %s", l.ClusterCIDR6)
	}
	saved, err := Load("", l.Name)
	if err != nil || saved.ClusterCIDR6 != l.ClusterCIDR6 {
		t.Fatalf("lab.json: %v %v", saved, err)
	}
	for _, n := range l.Nodes {
		v6 := 0
		for _, s := range n.Subnets {
			if s.Addr().Is6() {
				v6++
				if !l.ClusterCIDR6.Contains(s.Addr()) {
					t.Fatalf("node %s subnet %s outside %s", n.Name, s, l.ClusterCIDR6)
				}
			}
		}
		if v6 != 1 || len(n.Subnets) != 2 {
			t.Fatalf("node %s subnets %v", n.Name, n.Subnets)
		}
	}
	for _, p := range l.Pods {
		if !l.ClusterCIDR.Contains(p.IPv4()) || !l.ClusterCIDR6.Contains(p.IPv6()) {
			t.Fatalf("pod %s addresses %v", p.Name, p.IPs)
		}
	}
	cli, err := l.etcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := l.Pod("n2-p1")
	obj, err := etcd.GetObject(ctx, cli, "", etcd.KindPod, DefaultNamespace, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	po := obj.(*corev1.Pod)
	if len(po.Status.PodIPs) != 2 || po.Status.PodIPs[0].IP != p.IPv4().String() || po.Status.PodIPs[1].IP != p.IPv6().String() {
		t.Fatalf("Pod object podIPs %+v, want %v", po.Status.PodIPs, p.IPs)
	}

	r := check(t, l)
	if len(r.IPv6) != 12 {
		t.Fatalf("%d IPv6 cells, want 12", len(r.IPv6))
	}
	for _, c := range r.IPv6 {
		if c.SeenTCP != l.Pod(c.From).IPv6().String() {
			t.Fatalf("%s -> %s seen as %q", c.From, c.To, c.SeenTCP)
		}
	}

	// `podnet lab status -o json` lists both addresses.
	out, err := exec.Command(filepath.Join(binDir, "podnet"), "lab", "status", "--name", l.Name, "-o", "json").Output()
	if err != nil {
		t.Fatalf("lab status: %v", err)
	}
	var st Lab
	if err := json.Unmarshal(out, &st); err != nil || st.ClusterCIDR6 != l.ClusterCIDR6 || len(st.Pods) != 4 || !st.Pods[0].IPv6().IsValid() {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
}

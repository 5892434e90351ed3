package lab

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
)

// TestLabPodObjects drives the object commands through the podnet binary,
// as other tools do, and checks the objects in etcd and the new pod's
// connectivity (no policy is enforced by the lab itself).
func TestLabPodObjects(t *testing.T) {
	t.Parallel()
	l := upLab(t, VXLAN, 2, 1)
	podnet := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "podnet"), append(append([]string{"lab"}, args...), "--name", l.Name)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("podnet lab %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: l.Etcd.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func(kind, ns, name string) runtime.Object {
		t.Helper()
		o, err := etcd.GetObject(ctx, cli, "", kind, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}

	// up's pods have objects in default.
	if p, ok := get(etcd.KindPod, "default", "n1-p1").(*corev1.Pod); !ok || p.Labels["app"] != "n1-p1" || p.Status.PodIP != l.Pod("n1-p1").IPv4().String() {
		t.Fatalf("n1-p1 object: %+v", p)
	}

	podnet("pod", "add", "web/server", "--node", "n2", "--labels", "app=web,tier=front", "--ports", "http=tcp/8080,dns=udp/53")
	p, ok := get(etcd.KindPod, "web", "server").(*corev1.Pod)
	if !ok || p.Spec.NodeName != "n2" || p.Labels["tier"] != "front" || len(p.Spec.Containers[0].Ports) != 2 ||
		p.Spec.Containers[0].Ports[0].Name != "http" || p.Spec.Containers[0].Ports[0].ContainerPort != 8080 ||
		p.Status.PodIP == "" || len(p.Status.PodIPs) == 0 || p.Status.Phase != corev1.PodRunning {
		t.Fatalf("web/server object: %+v", p)
	}
	ns, ok := get(etcd.KindNamespace, "", "web").(*corev1.Namespace)
	if !ok || ns.Labels["kubernetes.io/metadata.name"] != "web" {
		t.Fatalf("namespace web: %+v", ns)
	}

	// status -o json has the pod with its namespace, labels, node, netns
	// and addresses.
	var st struct {
		Pods []*Pod `json:"pods"`
	}
	if err := json.Unmarshal([]byte(podnet("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	var sp *Pod
	for _, q := range st.Pods {
		if q.Namespace == "web" && q.Name == "server" {
			sp = q
		}
	}
	if sp == nil || sp.Node != "n2" || sp.Labels["app"] != "web" || !netns.Exists(NetnsPath(sp.Netns)) || sp.IPv4().String() != p.Status.PodIP {
		t.Fatalf("status: %+v", sp)
	}

	// The new pod reaches a pod on the other node, and back.
	peer := l.Pod("n1-p1")
	for _, c := range []struct{ from, to *Pod }{{sp, peer}, {peer, sp}} {
		ln, err := probe.Listen(NetnsPath(c.to.Netns), net.JoinHostPort(c.to.IPv4().String(), "7703"))
		if err != nil {
			t.Fatal(err)
		}
		seen, err := probe.Exchange(NetnsPath(c.from.Netns), "tcp", net.JoinHostPort(c.to.IPv4().String(), "7703"), 3*time.Second)
		ln.Close()
		if err != nil || seen != c.from.IPv4().String() {
			t.Fatalf("%s -> %s: seen as %q, %v", c.from.Ref(), c.to.Ref(), seen, err)
		}
	}

	// Labels.
	podnet("label", "pod", "web/server", "tier-", "env=prod")
	podnet("label", "namespace", "web", "team=a")
	if p := get(etcd.KindPod, "web", "server").(*corev1.Pod); p.Labels["env"] != "prod" || p.Labels["tier"] != "" || p.Labels["app"] != "web" {
		t.Fatalf("pod labels %v", p.Labels)
	}
	if ns := get(etcd.KindNamespace, "", "web").(*corev1.Namespace); ns.Labels["team"] != "a" || ns.Labels["kubernetes.io/metadata.name"] != "web" {
		t.Fatalf("namespace labels %v", ns.Labels)
	}

	// A failed pod add is rolled back: the last plugin of the chain
	// fails ADD (after podnet and portmap succeeded), so the pod is DEL'd,
	// its netns, object and record removed.
	bw := filepath.Join(l.binDir(), "bandwidth")
	if err := os.Remove(bw); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/bash\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected\"}'; exit 1; fi\nexec -a bandwidth " + l.PodnetBin + " \"$@\"\n"
	if err := os.WriteFile(bw, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "podnet"), "lab", "pod", "add", "web/broken", "--node", "n1", "--name", l.Name).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "injected") {
		t.Fatalf("pod add with a failing plugin: %v\n%s", err, out)
	}
	os.Remove(bw)
	if err := os.Symlink(l.PodnetBin, bw); err != nil {
		t.Fatal(err)
	}
	if lb, _ := Load("", l.Name); get(etcd.KindPod, "web", "broken") != nil || netns.Exists(NetnsPath(podNetns(l.Name, "web", "broken"))) || lb.Pod("web/broken") != nil {
		t.Fatal("failed pod add left its object, netns or record")
	}

	// apply / delete of a policy file.
	f := filepath.Join(t.TempDir(), "np.yaml")
	if err := os.WriteFile(f, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-http, namespace: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Ingress]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := podnet("apply", "-f", f); !strings.Contains(out, "allow-http created") {
		t.Fatalf("apply: %s", out)
	}
	if out := podnet("apply", "-f", f); !strings.Contains(out, "allow-http configured") {
		t.Fatalf("apply again: %s", out)
	}
	if get(etcd.KindNetworkPolicy, "web", "allow-http") == nil || get(etcd.KindNetworkPolicy, "default", "deny") == nil {
		t.Fatal("policies not in etcd")
	}
	podnet("delete", "-f", f)
	if get(etcd.KindNetworkPolicy, "web", "allow-http") != nil || get(etcd.KindNetworkPolicy, "default", "deny") != nil {
		t.Fatal("policies still in etcd")
	}

	// pod del: netns, object and record gone.
	podnet("pod", "del", "web/server")
	if get(etcd.KindPod, "web", "server") != nil || netns.Exists(NetnsPath(sp.Netns)) {
		t.Fatal("pod object or netns left after pod del")
	}
	l2, err := Load("", l.Name)
	if err != nil || l2.Pod("web/server") != nil || len(l2.Pods) != 2 {
		t.Fatalf("lab.json after del: %+v %v", l2, err)
	}
}

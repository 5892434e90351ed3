package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/podnet/podnet/internal/roottest"
)

// kubeLab is a --kubernetes lab for one test, with what its tests need.
type kubeLab struct {
	*Lab
	t  *testing.T
	cs *k8s.Clientset
	// before is each node's conditions just before podnet was applied.
	before map[string][]corev1.NodeCondition
}

// upKubeLab brings up a 2-node Kubernetes lab running podnet from an image
// built from this tree, and removes it when the test ends. It skips when
// the Kubernetes binaries or test images are not built, unless
// PODNET_REQUIRE_KUBE=1 (CI), where that fails.
func upKubeLab(t *testing.T) *kubeLab {
	t.Helper()
	roottest.Require(t)
	var ko KubeOptions
	if err := ko.defaults(filepath.Join(binDir, "podnet-agent")); err != nil && !strings.Contains(err.Error(), "no podnet image") {
		if os.Getenv("PODNET_REQUIRE_KUBE") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	k := &kubeLab{t: t, before: map[string][]corev1.NodeCondition{}}
	ko.PodnetImage = buildPodnetImage(t)
	ko.beforeInstall = func(l *Lab) error {
		cs, err := l.KubeClient()
		if err != nil {
			return err
		}
		nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, n := range nodes.Items {
			k.before[n.Name] = n.Status.Conditions
		}
		return nil
	}
	name := fmt.Sprintf("k%d%d", os.Getpid()%100000, seq.Add(1))
	var out strings.Builder
	o := Options{Name: name, Nodes: 2, Kubernetes: true, Kube: ko, Out: &out,
		AgentBin: filepath.Join(binDir, "podnet-agent"), PodnetBin: filepath.Join(binDir, "podnet")}
	l, err := Up(context.Background(), o)
	t.Cleanup(func() {
		var dout strings.Builder
		if err := Down("", name, &dout); err != nil {
			t.Errorf("down: %v\n%s", err, dout.String())
		}
		assertKubeGone(t, name, l)
	})
	if err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	k.Lab = l
	if k.cs, err = l.KubeClient(); err != nil {
		t.Fatal(err)
	}
	return k
}

// buildPodnetImage builds podnet's image from this tree as `make image`
// does (static binaries, tools/image) into a temp dir.
func buildPodnetImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range map[string]string{"podnet": "../cmd/podnet", "podnet-agent": "../cmd/podnet-agent"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	tar := filepath.Join(dir, "podnet-image.tar")
	cmd := exec.Command("go", "-C", "../tools/image", "run", ".", "-podnet", filepath.Join(dir, "podnet"),
		"-agent", filepath.Join(dir, "podnet-agent"), "-version", "test", "-o", tar)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podnet image: %v\n%s", err, out)
	}
	return tar
}

// assertKubeGone is assertGone plus the Kubernetes processes and mounts.
func assertKubeGone(t *testing.T, name string, l *Lab) {
	t.Helper()
	assertGone(t, name, l)
	dir := Dir("", name)
	if ps := procsMatching(func(pid int, exe string) bool {
		return cmdlineHas(pid, dir+"/") || exe == "containerd-shim-runc-v2" && cmdlineHas(pid, dir)
	}); len(ps) > 0 {
		t.Errorf("processes naming %s left behind: %v", dir, ps)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(b, []byte(dir)) {
		t.Errorf("mounts under %s left in the root mount namespace", dir)
	}
}

func (k *kubeLab) kubectl(args ...string) string {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := k.kubectlOutput(ctx, args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return string(out)
}

func (k *kubeLab) apply(manifest string) {
	k.t.Helper()
	var b bytes.Buffer
	if err := k.Kubectl(context.Background(), []string{"apply", "-f", "-"}, strings.NewReader(manifest), &b, &b); err != nil {
		k.t.Fatalf("apply: %v\n%s", err, b.String())
	}
}

// exec runs argv in pod's container; it returns the output and error.
func (k *kubeLab) exec(pod string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := k.kubectlOutput(ctx, append([]string{"exec", pod, "--"}, argv...)...)
	return strings.TrimSpace(string(out)), err
}

func (k *kubeLab) pods(selector string) []corev1.Pod {
	k.t.Helper()
	l, err := k.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		k.t.Fatal(err)
	}
	return l.Items
}

const agnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.56"

func TestKubernetes(t *testing.T) {
	k := upKubeLab(t)

	t.Run("NodeReadyOnlyWithPodnet", func(t *testing.T) {
		for _, n := range k.Nodes {
			for _, c := range k.before[n.Name] {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					t.Errorf("node %s was Ready before podnet was installed", n.Name)
				}
			}
			kn, err := k.cs.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, c := range kn.Status.Conditions {
				if c.Type == corev1.NodeNetworkUnavailable {
					found = true
					if c.Status != corev1.ConditionFalse || c.Reason != "PodnetIsUp" {
						t.Errorf("node %s: NetworkUnavailable %s (%s), want False (PodnetIsUp)", n.Name, c.Status, c.Reason)
					}
				}
			}
			if !found || !NodeReady(kn) {
				t.Errorf("node %s: not Ready with NetworkUnavailable cleared: %+v", n.Name, kn.Status.Conditions)
			}
		}
	})

	k.apply(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agnhost
        image: ` + agnhostImage + `
        args: [netexec, --http-port=8080, --udp-port=8081]
`)
	k.kubectl("rollout", "status", "deployment/web", "--timeout=120s")
	web := k.pods("app=web")

	t.Run("AddressesFromNodePodCIDR", func(t *testing.T) {
		seen := map[string]bool{}
		for _, p := range web {
			a, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil {
				t.Fatalf("pod %s: address %q: %v", p.Name, p.Status.PodIP, err)
			}
			n := k.Node(p.Spec.NodeName)
			if n == nil || len(n.Subnets) == 0 || !n.Subnets[0].Contains(a) {
				t.Errorf("pod %s on %s has %s, not from the node's pod CIDR %v", p.Name, p.Spec.NodeName, a, n.Subnets)
			}
			if seen[a.String()] {
				t.Errorf("address %s given twice", a)
			}
			seen[a.String()] = true
		}
	})

	t.Run("AllPairs", func(t *testing.T) {
		for _, src := range web {
			for _, dst := range web {
				if src.Name == dst.Name {
					continue
				}
				got, err := k.exec(src.Name, "curl", "-sS", "-m", "5", "http://"+net.JoinHostPort(dst.Status.PodIP, "8080")+"/hostname")
				if err != nil || got != dst.Name {
					t.Errorf("TCP %s (%s) -> %s (%s): %q %v", src.Name, src.Spec.NodeName, dst.Name, dst.Spec.NodeName, got, err)
				}
				if src.Spec.NodeName == dst.Spec.NodeName {
					continue
				}
				got, err = k.exec(src.Name, "sh", "-c", "echo hostname | nc -u -w 2 "+dst.Status.PodIP+" 8081")
				if err != nil || got != dst.Name {
					t.Errorf("UDP %s -> %s: %q %v", src.Name, dst.Name, got, err)
				}
			}
		}
	})

	t.Run("ClusterIPAndNodePort", func(t *testing.T) {
		k.apply(`apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`)
		svc, err := k.cs.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np, err := k.cs.CoreV1().Services("default").Get(context.Background(), "web-np", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodePort := strconv.Itoa(int(np.Spec.Ports[0].NodePort))
		// ClusterIP from a pod on each node: answers come from pods on
		// both nodes (kube-proxy DNAT, podnet carries the packets).
		for _, src := range []corev1.Pod{web[0], web[len(web)-1]} {
			served := map[string]bool{}
			roottest.Eventually(t, 30*time.Second, "ClusterIP from "+src.Name+" reaching pods on both nodes", func() error {
				got, err := k.exec(src.Name, "curl", "-sS", "-m", "3", "http://"+svc.Spec.ClusterIP+"/hostname")
				if err != nil {
					return err
				}
				for _, p := range web {
					if p.Name == got {
						served[p.Spec.NodeName] = true
					}
				}
				if len(served) < 2 {
					return fmt.Errorf("served by nodes %v so far", served)
				}
				return nil
			})
		}
		// NodePort from outside the cluster (the control plane's
		// namespace) on every node, and from a pod to the other node.
		cp := NetnsPath(k.Kubernetes.ControlPlane.Netns)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(_ context.Context, _, addr string) (net.Conn, error) { return dialIn(cp, addr, 5*time.Second) },
		}}
		for _, n := range k.Nodes {
			roottest.Eventually(t, 30*time.Second, "NodePort on "+n.Name, func() error {
				resp, err := client.Get("http://" + net.JoinHostPort(n.IP.String(), nodePort) + "/hostname")
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if !strings.HasPrefix(string(b), "web-") {
					return fmt.Errorf("answer %q", b)
				}
				return nil
			})
			got, err := k.exec(web[0].Name, "curl", "-sS", "-m", "5", "http://"+net.JoinHostPort(n.IP.String(), nodePort)+"/hostname")
			if err != nil || !strings.HasPrefix(got, "web-") {
				t.Errorf("NodePort %s:%s from pod %s: %q %v", n.IP, nodePort, web[0].Name, got, err)
			}
		}
	})

	// The upstream e2e specs a CNI provider is judged by, as CI can
	// afford (the full suites: `make e2e`, `make e2e-netpol`).
	t.Run("UpstreamGranularChecks", func(t *testing.T) {
		ginkgo, suite := k.Kubernetes.E2EBinaries()
		for _, b := range []string{ginkgo, suite} {
			if _, err := os.Stat(b); err != nil {
				if os.Getenv("PODNET_REQUIRE_KUBE") == "1" {
					t.Fatalf("%v: build it with tools/kubernetes/build.sh all", err)
				}
				t.Skipf("%v: build it with tools/kubernetes/build.sh all", err)
			}
		}
		var out strings.Builder
		res, err := k.E2E(context.Background(), E2EOptions{
			Focus: `\[sig-network\] Networking Granular Checks: Pods should function for (intra|node)-pod communication: (http|udp) .*\[Conformance\]`,
			Procs: 2, Timeout: 15 * time.Minute, ReportDir: t.TempDir(), Out: &out})
		t.Log("\n" + out.String())
		if err != nil {
			t.Fatal(err)
		}
		if res.Counts.Passed != 4 || res.Counts.Failed != 0 {
			t.Errorf("granular checks: %+v, want 4 passed", res.Counts)
		}
	})

	// A long TCP stream between pods on different nodes: the source
	// writes a numbered line every 200 ms; if the connection ever breaks,
	// nc exits and the container restarts, which the tests see.
	sink := k.startStream(t)
	t.Run("StreamSurvivesAgentRollingRestart", func(t *testing.T) {
		before := k.ticks(t, sink)
		k.kubectl("-n", "podnet-system", "rollout", "restart", "daemonset/podnet")
		k.kubectl("-n", "podnet-system", "rollout", "status", "daemonset/podnet", "--timeout=120s")
		k.assertStreamAlive(t, sink, before)
	})
	t.Run("StreamSurvivesKubeletRestart", func(t *testing.T) {
		before := k.ticks(t, sink)
		for _, n := range k.Nodes {
			pids, err := k.NodePIDs(n.Name)
			if err != nil {
				t.Fatal(err)
			}
			old := pids["kubelet"]
			if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			roottest.Eventually(t, 30*time.Second, "kubelet on "+n.Name+" restarted", func() error {
				p, err := k.NodePIDs(n.Name)
				if err != nil || p["kubelet"] == old || !alive(p["kubelet"]) {
					return fmt.Errorf("kubelet pid %d (was %d): %v", p["kubelet"], old, err)
				}
				return nil
			})
		}
		k.assertStreamAlive(t, sink, before)
		// The restarted kubelets still add pods: scale up and reach a new one.
		k.kubectl("scale", "deployment/web", "--replicas=8")
		k.kubectl("rollout", "status", "deployment/web", "--timeout=120s")
		for _, p := range k.pods("app=web") {
			if got, err := k.exec(web[0].Name, "curl", "-sS", "-m", "5", "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/hostname"); err != nil || got != p.Name {
				t.Errorf("after kubelet restart: %s -> %s: %q %v", web[0].Name, p.Name, got, err)
			}
		}
	})

	t.Run("DeleteFreesAddresses", func(t *testing.T) {
		k.kubectl("delete", "deployment/web", "pod/stream-sink", "pod/stream-source", "--wait=true", "--timeout=120s")
		for _, n := range k.Nodes {
			roottest.Eventually(t, 60*time.Second, "node "+n.Name+" released every pod address", func() error {
				ents, _ := os.ReadDir(filepath.Join(hostDir(n, "/var/lib/cni"), "networks", "podnet"))
				var held []string
				for _, e := range ents {
					if _, err := netip.ParseAddr(e.Name()); err == nil {
						held = append(held, e.Name())
					}
				}
				if netnses, _ := os.ReadDir(hostDir(n, "/run/netns")); len(held) > 0 || len(netnses) > 0 {
					return fmt.Errorf("addresses still reserved %v, %d pod namespaces", held, len(netnses))
				}
				return nil
			})
		}
	})
}

// startStream starts pods stream-sink (on n2) and stream-source (on n1)
// connected by one TCP connection, and returns the sink's name once ticks
// arrive.
func (k *kubeLab) startStream(t *testing.T) string {
	k.apply(`apiVersion: v1
kind: Pod
metadata: {name: stream-sink}
spec:
  nodeName: ` + k.Nodes[1].Name + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: nc
    image: ` + agnhostImage + `
    command: [nc, -l, "9000"]
`)
	var sinkIP string
	roottest.Eventually(t, 60*time.Second, "stream-sink running", func() error {
		p, err := k.cs.CoreV1().Pods("default").Get(context.Background(), "stream-sink", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("not running: %v", err)
		}
		sinkIP = p.Status.PodIP
		return nil
	})
	k.apply(`apiVersion: v1
kind: Pod
metadata: {name: stream-source}
spec:
  nodeName: ` + k.Nodes[0].Name + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: nc
    image: ` + agnhostImage + `
    command: [sh, -c, 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done | nc ` + sinkIP + ` 9000']
`)
	roottest.Eventually(t, 60*time.Second, "ticks arriving at stream-sink", func() error {
		if n := k.ticks(t, "stream-sink"); n < 3 {
			return fmt.Errorf("%d ticks", n)
		}
		return nil
	})
	return "stream-sink"
}

// ticks returns the last tick number the sink received.
func (k *kubeLab) ticks(t *testing.T, sink string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := k.kubectlOutput(ctx, "logs", sink, "--tail=1")
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(out)), "tick "))
	return n
}

// assertStreamAlive checks that ticks kept coming after before on the same
// connection: no container of either stream pod restarted.
func (k *kubeLab) assertStreamAlive(t *testing.T, sink string, before int) {
	t.Helper()
	roottest.Eventually(t, 10*time.Second, "ticks still arriving", func() error {
		if n := k.ticks(t, sink); n < before+10 {
			return fmt.Errorf("last tick %d, was %d", n, before)
		}
		return nil
	})
	for _, name := range []string{"stream-sink", "stream-source"} {
		p, err := k.cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount > 0 {
				t.Errorf("pod %s restarted %d times: the stream broke", name, c.RestartCount)
			}
		}
	}
}

package deploy

import (
	"bytes"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"

	"github.com/podnet/podnet/agent/datastore/kubernetes/kubetest"
)

func decode(t *testing.T) ([]runtime.Object, Objects) {
	t.Helper()
	objs, err := Decode(Manifest)
	if err != nil {
		t.Fatal(err)
	}
	o, err := Find(objs)
	if err != nil {
		t.Fatal(err)
	}
	return objs, o
}

// Every document decodes with client-go's scheme, strictly, in the order
// kubectl needs (the namespace before what lives in it).
func TestManifestDecodesStrictly(t *testing.T) {
	objs, _ := decode(t)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, reflect.TypeOf(o).Elem().Name())
	}
	want := []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	for _, o := range objs[1:] {
		m := o.(interface{ GetNamespace() string })
		if _, cluster := o.(*rbacv1.ClusterRole); cluster {
			continue
		}
		if _, cluster := o.(*rbacv1.ClusterRoleBinding); cluster {
			continue
		}
		if m.GetNamespace() != Namespace {
			t.Errorf("%T in namespace %q, want %s", o, m.GetNamespace(), Namespace)
		}
	}
	// Strictness is real: an unknown field fails.
	bad := bytes.Replace(Manifest, []byte("      hostNetwork: true\n"), []byte("      hostNetwork: true\n      hostNetwrk: true\n"), 1)
	if bytes.Equal(bad, Manifest) {
		t.Fatal("hostNetwork line not found")
	}
	if _, err := Decode(bad); err == nil || !strings.Contains(err.Error(), "hostNetwrk") {
		t.Fatalf("unknown field accepted: %v", err)
	}
}

// The ClusterRole is exactly the one the apiserver tests run the agent
// with (kubetest.AgentClusterRole), bound to the DaemonSet's account; and
// docs/agent.md points here instead of repeating it.
func TestClusterRole(t *testing.T) {
	objs, o := decode(t)
	var role *rbacv1.ClusterRole
	var bind *rbacv1.ClusterRoleBinding
	for _, obj := range objs {
		switch v := obj.(type) {
		case *rbacv1.ClusterRole:
			role = v
		case *rbacv1.ClusterRoleBinding:
			bind = v
		}
	}
	want := kubetest.AgentClusterRole()
	if role.Name != want.Name || !reflect.DeepEqual(role.Rules, want.Rules) {
		t.Fatalf("ClusterRole %s rules\n%+v\nwant (kubetest.AgentClusterRole)\n%+v", role.Name, role.Rules, want.Rules)
	}
	sa := o.DaemonSet.Spec.Template.Spec.ServiceAccountName
	if bind.RoleRef.Kind != "ClusterRole" || bind.RoleRef.Name != role.Name ||
		!reflect.DeepEqual(bind.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: Namespace}}) {
		t.Fatalf("binding %+v does not bind %s to ServiceAccount %s/%s", bind, role.Name, Namespace, sa)
	}
	doc, err := os.ReadFile("../docs/agent.md")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte("kind: ClusterRole")) || !bytes.Contains(doc, []byte("../deploy/podnet.yaml")) {
		t.Fatal("docs/agent.md must link ../deploy/podnet.yaml for the ClusterRole, not repeat it")
	}
}

func TestDaemonSet(t *testing.T) {
	_, o := decode(t)
	ds := o.DaemonSet
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSDefault || pod.PriorityClassName != "system-node-critical" {
		t.Errorf("hostNetwork %v, dnsPolicy %s, priorityClassName %q", pod.HostNetwork, pod.DNSPolicy, pod.PriorityClassName)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != "RollingUpdate" || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 1 {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1", ds.Spec.UpdateStrategy)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= 0 || *g > 30 {
		t.Errorf("terminationGracePeriodSeconds %v", g)
	}
	// Every taint, whatever its key, value or effect.
	taints := []corev1.Taint{
		{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule},
		{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoExecute},
		{Key: "node.kubernetes.io/network-unavailable", Effect: corev1.TaintEffectNoSchedule},
		{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
		{Key: "example.com/dedicated", Value: "db", Effect: corev1.TaintEffectPreferNoSchedule},
		{Key: "CriticalAddonsOnly", Value: "true"},
	}
	for _, taint := range taints {
		if !slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(klog.Background(), &taint, false) }) {
			t.Errorf("taint %s=%s:%s not tolerated", taint.Key, taint.Value, taint.Effect)
		}
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mountOf := func(c corev1.Container, hostPath string) string {
		for _, m := range c.VolumeMounts {
			if hostPaths[m.Name] == hostPath {
				return m.MountPath
			}
		}
		return ""
	}

	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("%d init containers, %d containers, want 1 and 1", len(pod.InitContainers), len(pod.Containers))
	}
	ini, ag := pod.InitContainers[0], pod.Containers[0]
	for _, c := range []corev1.Container{ini, ag} {
		if c.Image == "" || c.Image != ag.Image || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: image %q pull %s: both containers run the agent's image, IfNotPresent", c.Name, c.Image, c.ImagePullPolicy)
		}
	}
	// The init container installs into the host's /opt/cni/bin, wherever
	// it is mounted (the links are relative: plugins/all.Install).
	bin := mountOf(ini, "/opt/cni/bin")
	if bin == "" {
		t.Fatal("init container does not mount the host's /opt/cni/bin")
	}
	if want := []string{"/usr/local/bin/podnet", "plugins", "install", "--copy", "--dir", bin}; !slices.Equal(ini.Command, want) {
		t.Errorf("init command %q, want %q", ini.Command, want)
	}

	// The agent: host paths where its flags say.
	args, err := ExpandArgs(ag, o.ConfigMap, map[string]string{"spec.nodeName": "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	flag := func(name string) (string, bool) {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	for name, hostPath := range map[string]string{"state-dir": "/run/podnet", "cni-conf-dir": "/etc/cni/net.d"} {
		v, _ := flag(name)
		if m := mountOf(ag, hostPath); v != hostPath || m != hostPath {
			t.Errorf("--%s=%q, host %s mounted at %q: want both %s (the CNI plugin and runtime read the host path)", name, v, hostPath, m, hostPath)
		}
	}
	for name, want := range map[string]string{"datastore": "kubernetes", "node-name": "node-1", "metrics-address": ":" + strconv.Itoa(MetricsPort)} {
		if v, _ := flag(name); v != want {
			t.Errorf("--%s=%q, want %q", name, v, want)
		}
	}
	// Probes and the declared port are the metrics port.
	var port corev1.ContainerPort
	for _, p := range ag.Ports {
		if p.Name == "metrics" {
			port = p
		}
	}
	if port.ContainerPort != MetricsPort {
		t.Errorf("port metrics = %d, want %d", port.ContainerPort, MetricsPort)
	}
	for name, pr := range map[string]*corev1.Probe{"/healthz": ag.LivenessProbe, "/readyz": ag.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name || pr.HTTPGet.Port.String() != "metrics" {
			t.Errorf("probe %s: %+v, want httpGet %s on port metrics", name, pr, name)
		}
	}
	sc := ag.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("the agent must be privileged: it writes the forwarding sysctls under /proc/sys (read-only otherwise)")
	}
	if r := ag.Resources; r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || !r.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests, no memory limit", r)
	}
	// Every ConfigMap key is read by the agent, and documented.
	used := map[string]bool{}
	for _, e := range ag.Env {
		if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
			used[e.ValueFrom.ConfigMapKeyRef.Key] = true
		}
	}
	doc, err := os.ReadFile("../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	for k := range o.ConfigMap.Data {
		if !used[k] {
			t.Errorf("ConfigMap key %q is not passed to the agent", k)
		}
		if !bytes.Contains(doc, []byte("`"+k+"`")) {
			t.Errorf("ConfigMap key %q is not in docs/kubernetes.md", k)
		}
	}
}

func TestRender(t *testing.T) {
	out, err := Render(Options{Image: "ghcr.io/podnet/podnet:v1.2.3", Config: map[string]string{"cluster-cidr": "10.7.0.0/16,fd00:7::/48", "backend": "auto"}})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	o, err := Find(objs)
	if err != nil {
		t.Fatal(err)
	}
	if o.ConfigMap.Data["cluster-cidr"] != "10.7.0.0/16,fd00:7::/48" || o.ConfigMap.Data["backend"] != "auto" || o.ConfigMap.Data["mtu"] != "0" {
		t.Errorf("rendered ConfigMap %v", o.ConfigMap.Data)
	}
	pod := o.DaemonSet.Spec.Template.Spec
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		if c.Image != "ghcr.io/podnet/podnet:v1.2.3" {
			t.Errorf("%s image %s", c.Name, c.Image)
		}
	}
	if _, err := Render(Options{Config: map[string]string{"clustercidr": "10.7.0.0/16"}}); err == nil || !strings.Contains(err.Error(), `"clustercidr"`) {
		t.Errorf("unknown ConfigMap key: %v", err)
	}
	// Zero options: the same objects as the manifest.
	same, err := Render(Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := Decode(same)
	b, _ := Decode(Manifest)
	if !reflect.DeepEqual(a, b) {
		t.Error("Render(Options{}) differs from the manifest")
	}
}

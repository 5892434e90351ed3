package runtimes

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
)

const (
	criNet      = "pne2e-cri"
	criBridge   = "pne2e-br1"
	criSubnet   = "10.232.0.0/24"
	criGW       = "10.232.0.1"
	pauseImage  = "localhost/pne2e-pause:latest"
	criLabel    = "podnet-e2e"
	containerdD = WorkDir + "/containerd"
)

// containerdConfig is containerd 1.6's config with a private root, state,
// socket and opt dir, the CRI plugin's CNI pointed at podnet's plugin links
// and the test's conf dir, and restrict_oom_score_adj (root here lacks
// CAP_SYS_RESOURCE, so runc cannot lower the sandbox's oom_score_adj).
func containerdConfig(binDir, confDir string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[6]q
      conf_dir = %[7]q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
`, containerdD+"/root", containerdD+"/state", containerdD+"/containerd.sock", containerdD+"/opt",
		pauseImage, binDir, confDir)
}

// shimsOf returns the PIDs of the containerd shims serving socket.
func shimsOf(socket string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && strings.Contains(string(b), socket) {
			pids = append(pids, pid)
		}
	}
	return pids
}

type pod struct {
	name, id, ip, ns string
}

func TestContainerdCRI(t *testing.T) {
	need(t, "containerd", "ctr", "runc", "containerd-shim-runc-v2")
	start := time.Now()
	guardRoot(t, criBridge, criNet)
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	writeFile(t, filepath.Join(confDir, "10-"+criNet+".conflist"), podnetConflist(criNet, criBridge, criSubnet, criGW, dir))

	sock := containerdD + "/containerd.sock"
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Fatalf("a containerd already serves %s (left by an earlier run?)", sock)
	}
	unmountUnder(t, containerdD)
	os.RemoveAll(containerdD)
	if err := os.MkdirAll(containerdD, 0o755); err != nil {
		t.Fatal(err)
	}
	_, runContainerdExisted := os.Stat("/run/containerd")
	cfg := filepath.Join(containerdD, "config.toml")
	writeFile(t, cfg, containerdConfig(pluginDir, confDir))
	logPath := filepath.Join(dir, "containerd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var conn *grpc.ClientConn
	t.Cleanup(func() {
		// Pass or fail: remove every test sandbox through CRI (CNI DEL),
		// stop containerd and its shims, and drop its private state.
		if conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			rs := cri.NewRuntimeServiceClient(conn)
			if l, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{LabelSelector: map[string]string{criLabel: "1"}}}); err == nil {
				for _, p := range l.Items {
					t.Logf("cleanup: removing sandbox %s", p.Metadata.Name)
					rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.Id})
					rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.Id})
				}
			}
			cancel()
			conn.Close()
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("containerd ignored SIGTERM; killing it")
			cmd.Process.Kill()
			<-exited
		}
		for _, pid := range shimsOf(sock) {
			t.Errorf("cleanup: killing leftover shim %d", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		unmountUnder(t, containerdD)
		if err := os.RemoveAll(containerdD); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if os.IsNotExist(runContainerdExisted) {
			removeEmptyTree("/run/containerd")
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("containerd log (last 4 KiB):\n%s", tail(b, 4096))
			}
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd exited: %s", tail(b, 4096))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not open %s", sock)
		}
	}
	t.Logf("containerd up after %v", time.Since(start).Round(time.Millisecond))

	oci := filepath.Join(dir, "pause.oci.tar")
	if err := buildOCI(rootfsTar, oci, pauseImage, []string{"/bin/sleep", "2147483647"}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, nil, time.Minute, "ctr", "-a", sock, "-n", "k8s.io", "images", "import", oci)

	conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	rs := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := rs.Version(ctx, &cri.VersionRequest{})
	if err != nil {
		t.Fatalf("CRI Version: %v", err)
	}
	t.Logf("runtime %s %s (CRI %s)", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, err := rs.Status(ctx, &cri.StatusRequest{})
		if err != nil {
			t.Fatalf("CRI Status: %v", err)
		}
		ready := false
		for _, c := range st.Status.Conditions {
			if c.Type == cri.NetworkReady && c.Status {
				ready = true
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRI network not ready: %v", st.Status.Conditions)
		}
	}

	hostPort := freePort(t)
	var pods []pod
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("pne2e-pod-%d", i)
		cfg := &cri.PodSandboxConfig{
			Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: fmt.Sprintf("pne2e-%d-%d", i, time.Now().UnixNano())},
			Hostname:     name,
			LogDirectory: filepath.Join(dir, "podlogs", name),
			Labels:       map[string]string{criLabel: "1"},
			Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD}}},
		}
		if i == 0 {
			cfg.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: int32(hostPort)}}
		}
		if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		r, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("RunPodSandbox %s: %v", name, err)
		}
		dt := time.Since(t0)
		s, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: r.PodSandboxId, Verbose: true})
		if err != nil {
			t.Fatalf("PodSandboxStatus %s: %v", name, err)
		}
		// The sandbox's netns path is in the verbose info's OCI spec.
		var info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string } `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		}
		var nsPath string
		if err := json.Unmarshal([]byte(s.Info["info"]), &info); err != nil {
			t.Fatalf("PodSandboxStatus %s verbose info: %v", name, err)
		}
		for _, n := range info.RuntimeSpec.Linux.Namespaces {
			if n.Type == "network" {
				nsPath = n.Path
			}
		}
		if nsPath == "" {
			t.Fatalf("PodSandboxStatus %s: no network namespace path in the verbose info's runtimeSpec", name)
		}
		p := pod{name: name, id: r.PodSandboxId, ip: s.Status.GetNetwork().GetIp(), ns: nsPath}
		t.Logf("RunPodSandbox %s (%v): %s ip %s netns %s", name, dt.Round(time.Millisecond), s.Status.State, p.ip, p.ns)
		if s.Status.State != cri.PodSandboxState_SANDBOX_READY {
			t.Fatalf("%s state %s", name, s.Status.State)
		}
		if _, sn, _ := net.ParseCIDR(criSubnet); net.ParseIP(p.ip) == nil || !sn.Contains(net.ParseIP(p.ip)) {
			t.Fatalf("%s got address %q, want one in %s", name, p.ip, criSubnet)
		}
		pods = append(pods, p)
	}

	// Pod <-> pod: ICMP both ways and TCP, from sockets opened in the
	// sandboxes' namespaces.
	for _, pr := range [][2]pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
		if rtt, err := probe.Ping(pr[0].ns, net.ParseIP(pr[1].ip), 3*time.Second); err != nil {
			t.Errorf("%s -> %s ping: %v", pr[0].name, pr[1].name, err)
		} else {
			t.Logf("%s -> %s ping %v", pr[0].name, pr[1].name, rtt)
		}
	}
	var got string
	if err := netns.Do(pods[0].ns, func() error {
		b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
		got = strings.TrimSpace(string(b))
		return err
	}); err != nil || got != somaxconn {
		t.Errorf("somaxconn in %s = %q (%v), want %s (tuning)", pods[0].name, got, err, somaxconn)
	}
	l, err := probe.Listen(pods[0].ns, "0.0.0.0:80")
	if err != nil {
		t.Fatal(err)
	}
	self := fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	for _, c := range []struct{ from, what, addr string }{
		{pods[1].ns, pods[1].name, pods[0].ip + ":80"},
		{self, "host", pods[0].ip + ":80"},
		{self, "host", fmt.Sprintf("127.0.0.1:%d", hostPort)},
		{self, "host", fmt.Sprintf("%s:%d", criGW, hostPort)},
	} {
		if from, err := probe.Exchange(c.from, "tcp", c.addr, 3*time.Second); err != nil {
			t.Errorf("%s -> tcp %s: %v", c.what, c.addr, err)
		} else {
			t.Logf("%s -> tcp %s: ok (seen from %s)", c.what, c.addr, from)
		}
	}
	l.Close() // the listener's sockets would keep pod0's netns alive

	if ips := storeIPs(filepath.Join(dir, "ipam"), criNet); len(ips) != 2 {
		t.Errorf("host-local holds %v, want 2 addresses", ips)
	}
	if el, err := nftElements(); err != nil || len(el) == 0 {
		t.Errorf("no podnet nftables elements while the pods run: %v %v", el, err)
	} else {
		t.Logf("nftables elements while running: %v", el)
	}

	// Teardown as the kubelet does it: StopPodSandbox (DEL with prevResult
	// and the netns), StopPodSandbox again (DEL without prevResult), then
	// RemovePodSandbox (DEL without prevResult, CNI_NETNS="").
	for _, p := range pods {
		t0 := time.Now()
		for i := 0; i < 2; i++ {
			if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
				t.Errorf("StopPodSandbox #%d %s: %v", i+1, p.name, err)
			}
		}
		t1 := time.Since(t0)
		if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
			t.Errorf("RemovePodSandbox %s: %v", p.name, err)
		}
		t.Logf("%s: stop x2 %v, stop x2 + remove %v", p.name, t1.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		if netns.Exists(p.ns) {
			t.Errorf("%s: netns %s still there after RemovePodSandbox", p.name, p.ns)
		}
	}
	if l, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{}); err != nil || len(l.Items) != 0 {
		t.Errorf("sandboxes left: %v %v", l, err)
	}
	checkNothingLeft(t, filepath.Join(dir, "ipam"), criNet, criBridge)
	// Every Stop and the Remove ran a CNI DEL that succeeded: 3 per pod.
	if b, err := os.ReadFile(logPath); err == nil {
		if n := strings.Count(string(b), "TearDown network for sandbox"); n != 3*len(pods) {
			t.Errorf("containerd logged %d successful network teardowns, want %d (3 DELs per pod)", n, 3*len(pods))
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "level=error") && strings.Contains(strings.ToLower(line), "network") {
				t.Errorf("containerd logged a network error: %s", line)
			}
		}
	}
	t.Logf("TestContainerdCRI body: %v", time.Since(start).Round(time.Millisecond))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// removeEmptyTree removes dir's empty directories, deepest first, and dir
// itself if that leaves it empty.
func removeEmptyTree(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails on non-empty ones
	}
}

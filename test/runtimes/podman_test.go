package runtimes

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	podmanNet    = "pne2e-podman"
	podmanBridge = "pne2e-br0"
	podmanSubnet = "10.231.0.0/24"
	podmanGW     = "10.231.0.1"
	podmanImage  = "localhost/pne2e-busybox:latest"
	somaxconn    = "777"
)

// podnetConflist is the chain both runtimes get: bridge (hairpin, gateway,
// no masquerade) + host-local, portmap, firewall, tuning; cniVersion 1.0.0
// (podman 4.3's and containerd 1.6's libcni 1.1.2 stop there). Every plugin
// keeps its files in dir.
func podnetConflist(name, bridge, subnet, gw, dir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %[1]q,
  "plugins": [
    {"type": "bridge", "bridge": %[2]q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %[5]q, "routes": [{"dst": "0.0.0.0/0"}],
              "ranges": [[{"subnet": %[3]q, "gateway": %[4]q}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "dataDir": %[6]q},
    {"type": "firewall", "backend": "iptables"},
    {"type": "tuning", "sysctl": {"net.core.somaxconn": %[8]q}, "dataDir": %[7]q}
  ]
}
`, name, bridge, subnet, gw, filepath.Join(dir, "ipam"), filepath.Join(dir, "portmap"), filepath.Join(dir, "tuning"), somaxconn)
}

// freePort returns a TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// httpGet fetches url from the host, retrying for a few seconds while the
// server starts.
func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	var err error
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var resp *http.Response
		if resp, err = c.Get(url); err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 {
				return strings.TrimSpace(string(b)), nil
			}
			err = fmt.Errorf("status %s, read %v", resp.Status, rerr)
		}
	}
	return "", err
}

// unmountUnder lazily unmounts every mount point below dir (deepest first).
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mps = append(mps, f[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if err := unix.Unmount(mps[i], unix.MNT_DETACH); err == nil {
			t.Logf("cleanup: unmounted %s", mps[i])
		}
	}
}

func TestPodman(t *testing.T) {
	need(t, "podman", "conmon", "runc")
	start := time.Now()
	guardRoot(t, podmanBridge, podmanNet)
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	writeFile(t, filepath.Join(confDir, podmanNet+".conflist"), podnetConflist(podmanNet, podmanBridge, podmanSubnet, podmanGW, dir))

	// Private storage, run root and tmp dir, so /var/lib/containers and
	// /run/libpod stay untouched; the same flags are passed on to the
	// `podman container cleanup` that conmon runs when a container exits.
	pdir := filepath.Join(WorkDir, "podman")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	writeFile(t, conf, fmt.Sprintf(`[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = %q

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
`, pluginDir, confDir, filepath.Join(pdir, "tmp")))
	env := []string{"CONTAINERS_CONF=" + conf}
	global := []string{"--root", filepath.Join(pdir, "root"), "--runroot", filepath.Join(pdir, "runroot"), "--tmpdir", filepath.Join(pdir, "tmp")}
	podman := func(timeout time.Duration, args ...string) (string, error) {
		return run(t, env, timeout, "podman", append(append([]string{}, global...), args...)...)
	}
	mustPodman := func(args ...string) string {
		t.Helper()
		out, err := podman(45*time.Second, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	names := []string{"pne2e-a", "pne2e-b"}
	// podman's image import creates /var/lib/containers/cache and runc
	// /run/runc even with private storage: remove them if this test made
	// them.
	_, varLibContainers := os.Stat("/var/lib/containers")
	_, runRunc := os.Stat("/run/runc")
	t.Cleanup(func() {
		// Also the teardown path of a failed test: remove the containers
		// (CNI DEL), then the image and the private storage.
		podman(45*time.Second, append([]string{"rm", "-f", "-t", "0", "--ignore"}, names...)...)
		if out, _ := podman(45*time.Second, "ps", "-a", "--format", "{{.Names}}"); strings.TrimSpace(out) != "" {
			t.Errorf("podman containers left: %s", out)
		}
		podman(45*time.Second, "rmi", "-f", podmanImage)
		unmountUnder(t, pdir)
		if err := os.RemoveAll(pdir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if os.IsNotExist(varLibContainers) {
			os.RemoveAll("/var/lib/containers")
		}
		if os.IsNotExist(runRunc) {
			removeEmptyTree("/run/runc")
		}
	})

	info := mustPodman("info", "--format", "{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}")
	t.Logf("podman %s", info)
	if !strings.HasPrefix(info, "cni ") {
		t.Fatalf("podman network backend is %q, want cni", info)
	}
	if out := mustPodman("network", "ls", "--format", "{{.Name}}"); !strings.Contains(out, podmanNet) {
		t.Fatalf("podman does not see network %s in %s: %s", podmanNet, confDir, out)
	}
	mustPodman("import", "--change", `CMD ["/bin/sh"]`, rootfsTar, podmanImage)

	hostPort := freePort(t)
	mustPodman("run", "-d", "--name", "pne2e-a", "--cap-add", "NET_RAW", "--network", podmanNet,
		"-p", fmt.Sprintf("%d:80", hostPort), podmanImage,
		"sh", "-c", "mkdir -p /www && echo podnet-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www")
	mustPodman("run", "-d", "--name", "pne2e-b", "--cap-add", "NET_RAW", "--network", podmanNet, podmanImage, "sleep", "3600")
	ip := map[string]string{}
	for _, n := range names {
		ip[n] = mustPodman("inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, podmanNet), n)
		addr := net.ParseIP(ip[n])
		if _, sn, _ := net.ParseCIDR(podmanSubnet); addr == nil || !sn.Contains(addr) {
			t.Fatalf("%s got address %q, want one in %s", n, ip[n], podmanSubnet)
		}
		// The address podman reports is the one on eth0 inside.
		if out := mustPodman("exec", n, "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, ip[n]+"/24") {
			t.Errorf("%s eth0: %s, want %s/24", n, out, ip[n])
		}
	}
	t.Logf("addresses: %v, host port %d", ip, hostPort)

	// Container <-> container over the bridge.
	mustPodman("exec", "pne2e-a", "ping", "-c", "2", "-W", "2", ip["pne2e-b"])
	mustPodman("exec", "pne2e-b", "ping", "-c", "2", "-W", "2", ip["pne2e-a"])
	// tuning ran in the container's namespace.
	if got := mustPodman("exec", "pne2e-a", "cat", "/proc/sys/net/core/somaxconn"); got != somaxconn {
		t.Errorf("somaxconn inside = %q, want %s (tuning)", got, somaxconn)
	}
	// httpd: directly, and through the host port from 127.0.0.1 and the
	// bridge's gateway address (portmap DNAT), and from the other container
	// through the gateway (hairpin).
	want := "podnet-" + mustPodman("exec", "pne2e-a", "hostname")
	for _, u := range []string{
		"http://" + ip["pne2e-a"] + "/",
		fmt.Sprintf("http://127.0.0.1:%d/", hostPort),
		fmt.Sprintf("http://%s:%d/", podmanGW, hostPort),
	} {
		body, err := httpGet(u)
		if err != nil || body != want {
			t.Errorf("GET %s from the host: %q, %v", u, body, err)
		} else {
			t.Logf("GET %s: %s", u, body)
		}
	}
	if out, err := podman(30*time.Second, "exec", "pne2e-b", "wget", "-qO-", fmt.Sprintf("http://%s:%d/", podmanGW, hostPort)); err != nil || !strings.HasPrefix(out, "podnet-") {
		t.Errorf("pne2e-b -> gateway host port (hairpin): %q %v", out, err)
	}

	// The plugins' state is there while the containers run...
	if ips := storeIPs(filepath.Join(dir, "ipam"), podmanNet); len(ips) != 2 {
		t.Errorf("host-local holds %v, want 2 addresses", ips)
	}
	el, err := nftElements()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nftables elements while running: %v", el)
	if len(el) == 0 {
		t.Errorf("no podnet nftables elements while containers run (portmap/firewall did not run?)")
	}
	if ports, _ := bridgePorts(podmanBridge); len(ports) != 2 {
		t.Errorf("bridge ports while running: %v, want 2 veths", ports)
	}

	// ...and released when a container dies on its own: conmon then runs
	// `podman container cleanup` (the CNI DEL) with its own environment.
	mustPodman("kill", "pne2e-b")
	released := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ips := storeIPs(filepath.Join(dir, "ipam"), podmanNet)
		ports, _ := bridgePorts(podmanBridge)
		if len(ips) == 1 && ips[0] == ip["pne2e-a"] && len(ports) == 1 {
			released = true
			break
		}
	}
	if !released {
		t.Errorf("after pne2e-b exited: host-local holds %v, bridge ports %v; want only pne2e-a's",
			storeIPs(filepath.Join(dir, "ipam"), podmanNet), must(bridgePorts(podmanBridge)))
	}

	// ...and everything is gone after `podman rm -f` (CNI DEL).
	rm := time.Now()
	mustPodman("rm", "-f", "-t", "0", "pne2e-a", "pne2e-b")
	t.Logf("podman rm -f: %v", time.Since(rm).Round(time.Millisecond))
	waitNothingLeft(t, filepath.Join(dir, "ipam"), podmanNet, podmanBridge)
	t.Logf("TestPodman body: %v", time.Since(start).Round(time.Millisecond))
}

// waitNothingLeft gives an asynchronous teardown (conmon's exit command)
// a few seconds, then checks.
func waitNothingLeft(t *testing.T, dataDir, network, bridge string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		el, err := nftElements()
		ports, perr := bridgePorts(bridge)
		if err == nil && perr == nil && len(el) == 0 && len(ports) == 0 && len(storeIPs(dataDir, network)) == 0 {
			break
		}
	}
	checkNothingLeft(t, dataDir, network, bridge)
}

func must[T any](v T, _ error) T { return v }

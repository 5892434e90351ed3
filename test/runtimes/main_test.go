// Package runtimes runs podnet's plugins under real container runtimes:
// podman 4.3 with its CNI backend and containerd 1.6's CRI plugin (driven by
// an in-process CRI v1 client). Unlike test/e2e, the runtimes create the pod
// network namespaces themselves and run the plugins in the host (root)
// namespace, so the bridge, the veths' host ends and the nftables tables
// land there. Each test therefore uses its own bridge and subnet, disables
// ipMasq, and on the way out (pass or fail) removes its containers, the
// bridge, every podnet-* nftables table and the CNI caches, and restores
// net.ipv4.ip_forward. Traffic only goes to the containers' addresses,
// 127.0.0.1 and the bridge's gateway address.
//
// Needs root and the runtimes (scripts/runtimes-setup.sh installs them);
// tests skip with a message naming what is missing.
package runtimes

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// WorkDir holds the runtimes' private state (containerd root/state/socket,
// podman storage). Removed after the run.
const WorkDir = "/var/tmp/podnet-e2e"

var (
	setupOnce sync.Once
	setupErr  error
	tmpRoot   string
	pluginDir string // podnet's plugin links (CNI_PATH / cni_plugin_dirs)
	rootfsTar string // busybox rootfs
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tmpRoot != "" {
		os.RemoveAll(tmpRoot)
	}
	os.Remove(WorkDir) // only if empty
	os.Exit(code)
}

// need skips unless root and every binary is on PATH, then builds the
// plugins and the image rootfs once.
func need(t *testing.T, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (the runtimes run the plugins in the host namespace)")
	}
	var missing []string
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		t.Skipf("skipped: %s not installed (run scripts/runtimes-setup.sh)", strings.Join(missing, ", "))
	}
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("setup: %v", setupErr)
	}
}

func setup() error {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "podnet-runtimes-"); err != nil {
		return err
	}
	// The runtimes exec the plugins as other processes: keep the tree
	// traversable.
	if err := os.Chmod(tmpRoot, 0o755); err != nil {
		return err
	}
	// Not named "podnet": that name is also a plugin type, and argv[0]
	// picks the plugin.
	bin := filepath.Join(tmpRoot, "podnet-cli")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/podnet/podnet/cmd/podnet").CombinedOutput(); err != nil {
		return fmt.Errorf("go build podnet: %v\n%s", err, out)
	}
	pluginDir = filepath.Join(tmpRoot, "cni-bin")
	if out, err := exec.Command(bin, "plugins", "install", "--dir", pluginDir).CombinedOutput(); err != nil {
		return fmt.Errorf("podnet plugins install: %v\n%s", err, out)
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "firewall", "tuning", "loopback"} {
		if _, err := os.Stat(filepath.Join(pluginDir, p)); err != nil {
			return fmt.Errorf("podnet plugins install made no %s: %v", p, err)
		}
	}
	rootfsTar = filepath.Join(tmpRoot, "busybox-rootfs.tar")
	return buildRootfs(rootfsTar)
}

// buildRootfs writes a tar of a minimal busybox root filesystem: the static
// busybox, a symlink per applet, /etc/passwd and /etc/group.
func buildRootfs(out string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox (busybox-static) not installed: %w", err)
	}
	body, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if f, err := elf.Open(bb); err == nil {
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				return fmt.Errorf("%s is dynamically linked (install busybox-static)", bb)
			}
		}
	}
	list, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dir := func(name string, mode int64) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: now})
	}
	file := func(name string, mode int64, data []byte) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: now})
		tw.Write(data)
	}
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "root", "var", "run", "usr", "usr/bin", "usr/sbin"} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	file("bin/busybox", 0o755, body)
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	file("etc/group", 0o644, []byte("root:x:0:\n"))
	for _, a := range strings.Fields(string(list)) {
		if a == "bin/busybox" || strings.Count(a, "/") > 2 {
			continue
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777, ModTime: now})
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// buildOCI writes an OCI image-layout tarball (for `ctr images import`) with
// the rootfs as its single uncompressed layer.
func buildOCI(rootfs, out, name string, entrypoint []string) error {
	layer, err := os.ReadFile(rootfs)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(path string, data []byte) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: 0o644, Size: int64(len(data)), ModTime: time.Now()})
		tw.Write(data)
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	blob := func(data []byte, mt string) desc {
		sum := sha256.Sum256(data)
		d := hex.EncodeToString(sum[:])
		add("blobs/sha256/"+d, data)
		return desc{MediaType: mt, Digest: "sha256:" + d, Size: len(data)}
	}
	mustJSON := func(v any) []byte { b, _ := json.Marshal(v); return b }
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	ld := blob(layer, "application/vnd.oci.image.layer.v1.tar")
	cfg := map[string]any{
		"architecture": goarch(), "os": "linux",
		"config": map[string]any{"Entrypoint": entrypoint, "Env": []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld.Digest}},
	}
	cd := blob(mustJSON(cfg), "application/vnd.oci.image.config.v1+json")
	md := blob(mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": cd, "layers": []desc{ld},
	}), "application/vnd.oci.image.manifest.v1+json")
	md.Annotations = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": name[strings.LastIndex(name, ":")+1:],
	}
	add("index.json", mustJSON(map[string]any{"schemaVersion": 2, "manifests": []desc{md}}))
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// run runs a runtime client command with a timeout and returns its
// combined output.
func run(t *testing.T, env []string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s %s (%v)", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func mustRun(t *testing.T, env []string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := run(t, env, timeout, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeFile writes a file, failing the test on error.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/podnet/podnet/plugins/all"
)

// `plugins install --copy`, as the DaemonSet's init container runs it into
// the host's CNI bin dir mounted elsewhere: the binary is copied by rename
// (a new inode each time, never written in place) and every link is the
// relative "podnet", so it resolves under the host's path too.
func TestInstallCopyRelativeAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "host", "opt", "cni", "bin")
	install := func() uint64 {
		t.Helper()
		out, err := exec.Command(filepath.Join(binDir, "podnet"), "plugins", "install", "--copy", "--dir", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("install --copy: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "installed "+filepath.Join(dir, "bridge")+" -> podnet") {
			t.Fatalf("output does not show relative links:\n%s", out)
		}
		st, err := os.Lstat(filepath.Join(dir, "podnet"))
		if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 {
			t.Fatalf("podnet is %v, want a regular 0755 file", st.Mode())
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	first := install()
	// The copy stays open (as if being exec'd) across the second install.
	old, err := os.Open(filepath.Join(dir, "podnet"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if second := install(); second == first {
		t.Fatalf("second install reused inode %d: the copy was written in place, not renamed", first)
	}
	want, err := os.ReadFile(filepath.Join(binDir, "podnet"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "podnet"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the binary (%d vs %d bytes, %v)", len(got), len(want), err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "podnet-tmp") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
	// Moved to where the host sees it, every plugin still runs.
	hostDir := filepath.Join(t.TempDir(), "bin")
	if err := os.Rename(dir, hostDir); err != nil {
		t.Fatal(err)
	}
	for _, p := range all.Plugins() {
		if p.Type == "podnet" {
			continue
		}
		if l, err := os.Readlink(filepath.Join(hostDir, p.Type)); err != nil || l != "podnet" {
			t.Fatalf("%s -> %q (%v), want podnet", p.Type, l, err)
		}
	}
	c := exec.Command(filepath.Join(hostDir, "loopback"))
	c.Env = []string{"CNI_COMMAND=VERSION"}
	c.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
	if out, err := c.Output(); err != nil || !strings.Contains(string(out), "supportedVersions") {
		t.Fatalf("loopback VERSION through the moved relative link: %v %s", err, out)
	}
}

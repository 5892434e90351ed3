package all

import (
	"os"
	"path/filepath"
	"testing"
)

// A relative target makes relative links that resolve inside dir, so the
// directory can be populated under one path (an init container's
// /host/opt/cni/bin) and used under another (the host's /opt/cni/bin).
func TestInstallRelativeTarget(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "host", "opt", "cni", "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "podnet"), []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale regular file of a plugin's name is replaced by the link.
	if err := os.WriteFile(filepath.Join(dir, "bridge"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	made, err := Install(dir, "podnet")
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != len(Plugins())-1 {
		t.Fatalf("made %d links, want %d (every plugin but podnet itself)", len(made), len(Plugins())-1)
	}
	// "Move" the directory, as a host path differs from the container's.
	moved := filepath.Join(root, "opt-cni-bin")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	for _, p := range Plugins() {
		link := filepath.Join(moved, p.Type)
		st, err := os.Lstat(link)
		if err != nil {
			t.Fatalf("%s: %v", p.Type, err)
		}
		if p.Type == "podnet" {
			if !st.Mode().IsRegular() {
				t.Fatalf("podnet is %v, want the regular file left alone", st.Mode())
			}
			continue
		}
		got, err := os.Readlink(link)
		if err != nil || got != "podnet" {
			t.Fatalf("%s -> %q (%v), want podnet", p.Type, got, err)
		}
		b, err := os.ReadFile(link)
		if err != nil || string(b) != "binary" {
			t.Fatalf("%s resolves to %q (%v)", p.Type, b, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(moved, "*.podnet-tmp")); len(left) > 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// An absolute target is linked as given (no --copy: the links point at the
// binary where it is).
func TestInstallAbsoluteTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "podnet")
	if _, err := Install(dir, target); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(dir, "podnet")); err != nil || got != target {
		t.Fatalf("podnet -> %q (%v), want %s", got, err, target)
	}
}

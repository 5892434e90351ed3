package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fakeBinaries writes two small files that pass the ELF check.
func fakeBinaries(t *testing.T) (podnet, agent string) {
	t.Helper()
	dir := t.TempDir()
	podnet, agent = filepath.Join(dir, "podnet"), filepath.Join(dir, "podnet-agent")
	if err := os.WriteFile(podnet, []byte("\x7fELF fake podnet"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, []byte("\x7fELF fake podnet-agent"), 0o600); err != nil {
		t.Fatal(err)
	}
	return podnet, agent
}

type entry struct {
	mode int64
	typ  byte
	data []byte
	link string // a symlink's target
}

// files flattens the image's filesystem: path -> entry.
func files(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	m := map[string]entry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		m["/"+strings.TrimSuffix(h.Name, "/")] = entry{h.Mode, h.Typeflag, data, h.Linkname}
	}
	return m
}

// checkImage reads the tarball back and checks everything the image
// promises; it returns the image for further checks.
func checkImage(t *testing.T, out string, wantTag string, s Spec) v1.Image {
	t.Helper()
	// The tarball's manifest.json names the tag.
	mf, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(mf) != 1 || !reflect.DeepEqual(mf[0].RepoTags, []string{wantTag}) {
		t.Fatalf("manifest.json = %+v, want one image tagged %s", mf, wantTag)
	}
	tag, err := name.NewTag(wantTag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate: %v", err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	c := cf.Config
	if !reflect.DeepEqual(c.Entrypoint, []string{"/usr/local/bin/podnet-agent"}) || !reflect.DeepEqual(c.Cmd, []string{"agent"}) {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if len(c.Env) != 1 || !strings.HasPrefix(c.Env[0], "PATH=") || !strings.Contains(c.Env[0], "/usr/local/bin") {
		t.Errorf("env %q, want PATH with /usr/local/bin", c.Env)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":   "podnet",
		"org.opencontainers.image.version": s.Version,
		"org.opencontainers.image.source":  "https://github.com/podnet/podnet",
	}
	if !reflect.DeepEqual(c.Labels, wantLabels) {
		t.Errorf("labels %v, want %v", c.Labels, wantLabels)
	}
	if !cf.Created.Time.Equal(s.Created) {
		t.Errorf("created %v, want %v", cf.Created.Time, s.Created)
	}
	if len(cf.History) != 1 || !cf.History[0].Created.Time.Equal(s.Created) {
		t.Errorf("history %+v, want one entry created %v", cf.History, s.Created)
	}

	fs := files(t, img)
	for dst, src := range map[string]string{"/usr/local/bin/podnet": s.Podnet, "/usr/local/bin/podnet-agent": s.Agent} {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		e, ok := fs[dst]
		if !ok {
			t.Errorf("%s missing; image has %v", dst, keys(fs))
			continue
		}
		if e.typ != tar.TypeReg || e.mode != 0o755 || !bytes.Equal(e.data, want) {
			t.Errorf("%s: type %c mode %o, %d bytes; want regular 0755 with %s's %d bytes", dst, e.typ, e.mode, len(e.data), src, len(want))
		}
	}
	// Nothing else: no shell, no certs.
	wantPaths := []string{"/tmp", "/usr", "/usr/local", "/usr/local/bin", "/usr/local/bin/podnet", "/usr/local/bin/podnet-agent"}
	if got := keys(fs); !reflect.DeepEqual(got, wantPaths) {
		t.Errorf("image paths %v, want %v", got, wantPaths)
	}
	if fs["/tmp"].mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", fs["/tmp"].mode)
	}
	return img
}

func keys(m map[string]entry) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	// small: insertion sort keeps the test free of extra imports
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

func TestWriteAndReadBack(t *testing.T) {
	podnet, agent := fakeBinaries(t)
	s := Spec{Podnet: podnet, Agent: agent, Version: "v0.3.0-2-gabc1234-dirty", Created: time.Unix(1700000000, 0).UTC()}
	out := filepath.Join(t.TempDir(), "podnet-image.tar")
	tag, err := Write(s, out)
	if err != nil {
		t.Fatal(err)
	}
	want := "ghcr.io/podnet/podnet:v0.3.0-2-gabc1234-dirty"
	if tag.Name() != want {
		t.Errorf("tag %s, want %s", tag.Name(), want)
	}
	img := checkImage(t, out, want, s)

	// Same inputs, same image: the digest is reproducible.
	out2 := filepath.Join(t.TempDir(), "again.tar")
	if _, err := Write(s, out2); err != nil {
		t.Fatal(err)
	}
	tag2, _ := name.NewTag(want)
	img2, err := tarball.ImageFromPath(out2, &tag2)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same binaries differ: %s vs %s", d1, d2)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestTag(t *testing.T) {
	for _, c := range []struct{ version, repo, want string }{
		{"b2e8d2f", "", "ghcr.io/podnet/podnet:b2e8d2f"},
		{"v1.2.3", "registry.local:5000/net/podnet", "registry.local:5000/net/podnet:v1.2.3"},
		{"v1.2.3+build/7", "", "ghcr.io/podnet/podnet:v1.2.3-build-7"},
		{"-x", "", "ghcr.io/podnet/podnet:v-x"},
	} {
		tag, err := Spec{Version: c.version, Repo: c.repo}.Tag()
		if err != nil || tag.Name() != c.want {
			t.Errorf("Tag(%q, %q) = %v, %v; want %s", c.version, c.repo, tag, err, c.want)
		}
	}
	if _, err := (Spec{}).Tag(); err == nil {
		t.Error("empty version accepted")
	}
}

func TestRejectsNonELF(t *testing.T) {
	podnet, _ := fakeBinaries(t)
	script := filepath.Join(t.TempDir(), "podnet-agent")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "x.tar")
	if _, err := Write(Spec{Podnet: podnet, Agent: script, Version: "v1"}, out); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Fatalf("Write with a script as agent: %v, want not-an-ELF error", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output written despite the error")
	}
}

// TestMakeImage runs the real `make image` (both binaries built static for
// linux/amd64, about a minute) into a temporary directory and checks the
// result like the fake one.
func TestMakeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both podnet binaries (~1 min); skipped under -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd/podnet-agent")); err != nil {
		t.Skipf("not in the podnet repository: %v", err)
	}
	tmp := t.TempDir()
	out := filepath.Join(tmp, "podnet-image.tar")
	cmd := exec.Command("make", "-C", root, "image", "VERSION=v9.9.9-test", "IMAGE_BIN="+tmp, "IMAGE_TAR="+out)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, b)
	}
	s := Spec{Podnet: filepath.Join(tmp, "podnet"), Agent: filepath.Join(tmp, "podnet-agent"), Version: "v9.9.9-test", Created: time.Unix(1700000000, 0).UTC()}
	checkImage(t, out, "ghcr.io/podnet/podnet:v9.9.9-test", s)
	for _, b := range []string{s.Podnet, s.Agent} {
		f, err := elf.Open(b)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if f.Machine != elf.EM_X86_64 {
			t.Errorf("%s: machine %v, want x86-64", b, f.Machine)
		}
		// Static: no PT_INTERP (no dynamic loader).
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", b)
			}
		}
	}
}

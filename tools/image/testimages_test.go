package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// needTestInputs skips unless the host has what the test images copy.
func needTestInputs(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("skipped: %s missing (busybox-static: run scripts/runtimes-setup.sh)", p)
		}
	}
	for _, tool := range DefaultTools {
		if _, err := os.Stat(tool.Src); err != nil {
			t.Skipf("skipped: %s missing (run scripts/runtimes-setup.sh)", tool.Src)
		}
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipped: no go on PATH to build pause")
	}
}

// readImage reads one image back from a tarball whose manifest.json lists
// exactly the images tagged all (one tag each), by its tag ref: valid.
func readImage(t *testing.T, file, ref string, all ...string) v1.Image {
	t.Helper()
	mf, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		all = []string{ref}
	}
	want := append([]string(nil), all...)
	sort.Strings(want)
	var got []string
	for _, d := range mf {
		if len(d.RepoTags) != 1 {
			t.Fatalf("%s: manifest.json = %+v, want one tag per image", file, mf)
		}
		got = append(got, d.RepoTags[0])
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: manifest.json = %+v, want images tagged %s", file, mf, strings.Join(want, ", "))
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(file, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("%s: validate: %v", file, err)
	}
	return img
}

// resolve follows symlinks (absolute or relative to the link's directory)
// inside the flattened image to a non-link entry.
func resolve(fs map[string]entry, p string) (string, entry, bool) {
	for range 10 {
		e, ok := fs[p]
		if !ok || e.typ != tar.TypeSymlink {
			return p, e, ok
		}
		if strings.HasPrefix(e.link, "/") {
			p = path.Clean(e.link)
		} else {
			p = path.Join(path.Dir(p), e.link)
		}
	}
	return p, entry{}, false
}

// checkRuns checks that the dynamically linked program at p in the image
// finds its loader and, as the loader would search the image's
// /lib/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu, every library.
func checkRuns(t *testing.T, fs map[string]entry, p string) {
	t.Helper()
	_, e, ok := resolve(fs, p)
	if !ok || e.typ != tar.TypeReg || e.mode&0o111 == 0 {
		t.Errorf("%s: missing or not an executable file", p)
		return
	}
	f, err := elf.NewFile(bytes.NewReader(e.data))
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	interp := ""
	for _, pr := range f.Progs {
		if pr.Type == elf.PT_INTERP {
			b := make([]byte, pr.Filesz)
			pr.ReadAt(b, 0)
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		t.Errorf("%s: static, want the host's dynamically linked program", p)
	} else if _, le, ok := resolve(fs, interp); !ok || le.typ != tar.TypeReg || le.mode&0o111 == 0 || !bytes.HasPrefix(le.data, []byte("\x7fELF")) {
		t.Errorf("%s: loader %s missing from the image", p, interp)
	}
	queue, seen := []*elf.File{f}, map[string]bool{}
	for len(queue) > 0 {
		needed, err := queue[0].ImportedLibraries()
		queue = queue[1:]
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needed {
			if seen[n] {
				continue
			}
			seen[n] = true
			var le entry
			found := false
			for _, dir := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"} {
				if _, le, found = resolve(fs, dir+"/"+n); found {
					break
				}
			}
			if !found || le.typ != tar.TypeReg {
				t.Errorf("%s: library %s missing from the image", p, n)
				continue
			}
			lf, err := elf.NewFile(bytes.NewReader(le.data))
			if err != nil {
				t.Errorf("%s: %v", n, err)
				continue
			}
			queue = append(queue, lf)
		}
	}
	if len(seen) < 2 {
		t.Errorf("%s: only %d libraries", p, len(seen))
	}
}

// checkTestImages reads back what WriteTestImages wrote to dir from s and
// checks every image; it returns images.txt.
func checkTestImages(t *testing.T, dir string, s TestSpec) string {
	t.Helper()
	created := v1.Time{Time: s.Created}
	env := []string{EnvPath}

	pause := readImage(t, filepath.Join(dir, PauseFile), PauseRef)
	cf, err := pause.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want := v1.Config{Entrypoint: []string{"/pause"}, User: PauseUser, Env: env, WorkingDir: "/"}
	if !reflect.DeepEqual(cf.Config, want) || cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Equal(created.Time) {
		t.Errorf("pause config %+v %s/%s %v, want %+v linux/amd64 %v", cf.Config, cf.OS, cf.Architecture, cf.Created, want, s.Created)
	}
	fs := files(t, pause)
	if got := keys(fs); !reflect.DeepEqual(got, []string{"/pause"}) {
		t.Errorf("pause image holds %v, want /pause only", got)
	}
	if e := fs["/pause"]; e.typ != tar.TypeReg || e.mode != 0o755 {
		t.Errorf("/pause: type %c mode %o", e.typ, e.mode)
	} else if f, err := elf.NewFile(bytes.NewReader(e.data)); err != nil {
		t.Errorf("/pause: %v", err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("/pause is dynamically linked")
			}
		}
	}

	busybox := readImage(t, filepath.Join(dir, BusyboxFile), BusyboxRef)
	if cf, err = busybox.ConfigFile(); err != nil {
		t.Fatal(err)
	}
	want = v1.Config{Cmd: []string{"sh"}, Env: env, WorkingDir: "/"}
	if !reflect.DeepEqual(cf.Config, want) || !cf.Created.Equal(created.Time) {
		t.Errorf("busybox config %+v, want %+v", cf.Config, want)
	}
	bbBody, err := os.ReadFile(s.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(s.Busybox, "--list-full").Output()
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox := func(img string, fs map[string]entry) {
		if e := fs["/bin/busybox"]; e.typ != tar.TypeReg || e.mode != 0o755 || !bytes.Equal(e.data, bbBody) {
			t.Errorf("%s: /bin/busybox is not %s (type %c mode %o)", img, s.Busybox, e.typ, e.mode)
		}
		applets := 0
		for _, a := range strings.Fields(string(list)) {
			if !strings.Contains(a, "/") || a == "bin/busybox" {
				continue
			}
			applets++
			if img == "agnhost" && (a == "usr/bin/nc" || a == "bin/sh") {
				continue // OpenBSD netcat, bash
			}
			if e := fs["/"+a]; e.typ != tar.TypeSymlink || e.link != "/bin/busybox" {
				t.Errorf("%s: /%s is not a link to /bin/busybox: %+v", img, a, e.link)
			}
		}
		for _, a := range []string{"/bin/ash", "/bin/sleep", "/bin/ls", "/usr/bin/wget", "/sbin/ip"} {
			if _, e, ok := resolve(fs, a); !ok || !bytes.Equal(e.data, bbBody) {
				t.Errorf("%s: applet %s does not lead to busybox", img, a)
			}
		}
		if applets < 100 {
			t.Errorf("%s: %d applets", img, applets)
		}
		if _, ok := fs["/linuxrc"]; ok {
			t.Errorf("%s: /linuxrc in the image", img)
		}
		for _, d := range []struct {
			p    string
			mode int64
		}{{"/tmp", 0o1777}, {"/var/tmp", 0o1777}, {"/root", 0o700}, {"/etc", 0o755}, {"/usr/bin", 0o755}} {
			if e := fs[d.p]; e.typ != tar.TypeDir || e.mode != d.mode {
				t.Errorf("%s: %s: type %c mode %o, want a directory %o", img, d.p, e.typ, e.mode, d.mode)
			}
		}
		if !strings.HasPrefix(string(fs["/etc/passwd"].data), "root:x:0:0:") || !strings.HasPrefix(string(fs["/etc/group"].data), "root:x:0:") {
			t.Errorf("%s: /etc/passwd %q /etc/group %q", img, fs["/etc/passwd"].data, fs["/etc/group"].data)
		}
	}
	checkBusybox("busybox", files(t, busybox))

	agnhost := readImage(t, filepath.Join(dir, AgnhostFile), AgnhostRef, AgnhostRef, AgnhostNPRef)
	if cf, err = agnhost.ConfigFile(); err != nil {
		t.Fatal(err)
	}
	want = v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: env, WorkingDir: "/",
		ExposedPorts: map[string]struct{}{"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}}}
	if !reflect.DeepEqual(cf.Config, want) || !cf.Created.Equal(created.Time) || len(cf.History) != 2 {
		t.Errorf("agnhost config %+v, %d history entries; want %+v, 2", cf.Config, len(cf.History), want)
	}
	// The busybox rootfs is one blob in both images.
	bl, _ := busybox.Layers()
	al, _ := agnhost.Layers()
	if len(bl) != 1 || len(al) != 2 {
		t.Fatalf("layers: busybox %d, agnhost %d; want 1, 2", len(bl), len(al))
	}
	bd, _ := bl[0].Digest()
	ad, _ := al[0].Digest()
	if bd != ad {
		t.Errorf("agnhost's base layer %s is not busybox's %s", ad, bd)
	}
	fs = files(t, agnhost)
	checkBusybox("agnhost", fs)
	agBody, err := os.ReadFile(s.Agnhost)
	if err != nil {
		t.Fatal(err)
	}
	if e := fs["/agnhost"]; e.typ != tar.TypeReg || e.mode != 0o755 || !bytes.Equal(e.data, agBody) {
		t.Errorf("/agnhost is not %s (type %c mode %o)", s.Agnhost, e.typ, e.mode)
	}
	if e := fs["/agnhost-2"]; e.typ != tar.TypeSymlink || e.link != "agnhost" {
		t.Errorf("/agnhost-2: %+v, want a link to agnhost", e.link)
	}
	if e := fs["/uploads"]; e.typ != tar.TypeDir {
		t.Error("/uploads missing")
	}
	if _, ok := fs["/bin/ash"]; !ok {
		t.Error("/bin/ash missing")
	}
	if e := fs["/bin/sh"]; e.typ != tar.TypeSymlink || e.link != "bash" {
		t.Errorf("/bin/sh: link %q, want bash (busybox ash prefers its own nc)", e.link)
	}
	tools := map[string]string{"/bin/sh": "/bin/bash"}
	for _, tool := range DefaultTools {
		tools[tool.Dst] = tool.Src
	}
	for _, dst := range []string{"/usr/bin/curl", "/usr/bin/nc", "/usr/bin/dig", "/usr/bin/getent", "/usr/bin/ss", "/bin/bash"} {
		if tools[dst] == "" {
			t.Errorf("DefaultTools lack %s", dst)
		}
	}
	for dst, src := range tools {
		body, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, e, _ := resolve(fs, dst); e.typ != tar.TypeReg || !bytes.Equal(e.data, body) {
			t.Errorf("%s is not %s", dst, src)
		}
		checkRuns(t, fs, dst)
	}
	// agnhost:2.45, in the same file: agnhost plus /agnhost-bin and the
	// porter wrapper at /agnhost.
	np := readImage(t, filepath.Join(dir, AgnhostFile), AgnhostNPRef, AgnhostRef, AgnhostNPRef)
	ncf, err := np.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ncf.Config, cf.Config) || len(ncf.History) != 3 {
		t.Errorf("agnhost:2.45 config %+v, %d history entries; want agnhost's, 3", ncf.Config, len(ncf.History))
	}
	nl, _ := np.Layers()
	if len(nl) != 3 {
		t.Fatalf("agnhost:2.45: %d layers, want 3", len(nl))
	}
	for i := range al {
		d1, _ := al[i].Digest()
		if d2, _ := nl[i].Digest(); d1 != d2 {
			t.Errorf("agnhost:2.45 layer %d %s is not agnhost's %s", i, d2, d1)
		}
	}
	nfs := files(t, np)
	if e := nfs["/agnhost-bin"]; e.typ != tar.TypeReg || e.mode != 0o755 || !bytes.Equal(e.data, agBody) {
		t.Errorf("agnhost:2.45: /agnhost-bin is not %s", s.Agnhost)
	}
	if e := nfs["/agnhost"]; e.typ != tar.TypeReg || e.mode != 0o755 || string(e.data) != agnhostNPWrapper {
		t.Errorf("agnhost:2.45: /agnhost is not the wrapper: %q", e.data)
	}
	list2, err := os.ReadFile(filepath.Join(dir, ListFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file, ref string
		img       v1.Image
	}{{PauseFile, PauseRef, pause}, {BusyboxFile, BusyboxRef, busybox}, {AgnhostFile, AgnhostRef, agnhost}, {AgnhostFile, AgnhostNPRef, np}} {
		d, _ := c.img.Digest()
		if line := c.file + " " + c.ref + " " + d.String() + "\n"; !strings.Contains(string(list2), line) {
			t.Errorf("%s lacks %q:\n%s", ListFile, line, list2)
		}
	}
	return string(list2)
}

// TestTestImages builds the test images with a stand-in agnhost (a copy of
// the static busybox), checks them, and builds them again: same digests.
func TestTestImages(t *testing.T) {
	needTestInputs(t)
	s := TestSpec{Busybox: "/bin/busybox", Agnhost: "/bin/busybox", Created: time.Unix(1700000000, 0).UTC()}
	dir := t.TempDir()
	if _, err := WriteTestImages(s, dir); err != nil {
		t.Fatal(err)
	}
	first := checkTestImages(t, dir, s)
	dir2 := t.TempDir()
	if _, err := WriteTestImages(s, dir2); err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(filepath.Join(dir2, ListFile)); string(second) != first {
		t.Errorf("two builds differ:\n%s\n%s", first, second)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

// TestTestImagesAgnhost builds them with the real agnhost.
func TestTestImagesAgnhost(t *testing.T) {
	needTestInputs(t)
	cache := os.Getenv("PODNET_TEST_CACHE")
	if cache == "" {
		cache = "/var/cache/podnet-test"
	}
	agnhost := filepath.Join(cache, "agnhost-v1.34.4")
	if _, err := os.Stat(agnhost); err != nil {
		t.Skipf("skipped: %s missing (build it with tools/kubernetes/build.sh agnhost)", agnhost)
	}
	s := TestSpec{Busybox: "/bin/busybox", Agnhost: agnhost, Created: time.Unix(0, 0).UTC()}
	dir := t.TempDir()
	if _, err := WriteTestImages(s, dir); err != nil {
		t.Fatal(err)
	}
	checkTestImages(t, dir, s)
}

// TestPauseExitsOnSIGTERM runs the pause binary the images get and stops
// it with SIGTERM, then SIGINT: it must exit 0 at once, not wait for SIGKILL.
func TestPauseExitsOnSIGTERM(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipped: no go on PATH to build pause")
	}
	p, err := BuildPause(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(p)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			t.Fatalf("pause exited by itself: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		cmd.Process.Signal(sig)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause after %v: %v, want exit 0", sig, err)
			}
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("pause ignored %v", sig)
		}
	}
}

func TestResolveELFMissingLibrary(t *testing.T) {
	if _, err := os.Stat("/usr/bin/curl"); err != nil {
		t.Skip("skipped: no /usr/bin/curl")
	}
	if _, err := ResolveELF("/usr/bin/curl", []string{t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("ResolveELF with an empty search path: %v, want a not-found error", err)
	}
	d, err := ResolveELF("/usr/bin/curl", LibSearchPath)
	if err != nil || d.Interp == "" || d.Libs["libcurl.so.4"] == "" || d.Libs["libc.so.6"] == "" {
		t.Errorf("ResolveELF(curl) = %+v, %v", d, err)
	}
	if d, err := ResolveELF("/bin/busybox", LibSearchPath); err == nil && !d.Static() {
		t.Errorf("static busybox has deps %+v", d)
	}
}

// TestAgnhostNPWrapper runs agnhost:2.45's /agnhost wrapper with a fake
// agnhost: other subcommands pass through with their exit status; a porter
// that exits (no SCTP) leaves the wrapper pausing until SIGTERM, which it
// obeys at once.
func TestAgnhostNPWrapper(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("skipped: no bash")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "agnhost-bin")
	if err := os.WriteFile(fake, []byte("#!/bin/bash\ncase $1 in\nporter) echo 'Failed to listen SCTP' >&2; exit 1 ;;\npause) exec sleep 60 ;;\n*) echo \"ran $*\"; exit 7 ;;\nesac\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "agnhost")
	if err := os.WriteFile(wrapper, []byte(strings.ReplaceAll(agnhostNPWrapper, "/agnhost-bin", fake)), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(wrapper, "connect", "1.2.3.4:80").Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 || string(out) != "ran connect 1.2.3.4:80\n" {
		t.Errorf("connect: %q, %v; want the fake's output and exit 7", out, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(wrapper, "porter")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("porter wrapper exited (%v): %s", err, stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("porter wrapper after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("porter wrapper ignored SIGTERM")
	}
	if !strings.Contains(stderr.String(), "Failed to listen SCTP") || !strings.Contains(stderr.String(), "pausing") {
		t.Errorf("porter wrapper stderr %q", stderr.String())
	}
}

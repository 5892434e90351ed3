package main

// Test images (-test-images): the three images the lab's Kubernetes cluster
// and the upstream e2e network tests run, built here because the lab has no
// registry. Each node's containerd imports them with
// `ctr -n k8s.io images import FILE`; tools/image/test-images.sh builds them
// once into /var/cache/podnet-test/images-v1.34.4/.
//
//   pause.tar    registry.k8s.io/pause:3.10.1
//                /pause only: a static Go program (pause/main.go, built here
//                with CGO_ENABLED=0) that exits on SIGTERM/SIGINT and reaps
//                zombies; ENTRYPOINT ["/pause"], USER 65535:65535 as upstream.
//   busybox.tar  registry.k8s.io/e2e-test-images/busybox:1.37.0-1
//                the host's static busybox (Debian busybox-static) at
//                /bin/busybox with a symlink per applet, /etc/passwd and
//                /etc/group (root, nobody), /tmp 1777; CMD ["sh"].
//   agnhost.tar  registry.k8s.io/e2e-test-images/agnhost:2.56
//                the busybox layer (the same blob) plus a layer with
//                /agnhost, /agnhost-2 -> agnhost and /uploads as upstream's
//                Dockerfile, and the host's programs the e2e network tests
//                exec in agnhost: curl, OpenBSD netcat (nc -u; busybox's nc
//                has none), dig and getent (DNS tests), ss (a NodePort test)
//                and bash (DefaultTools), with every shared library they
//                load in /usr/lib/x86_64-linux-gnu and the loader at its
//                PT_INTERP path; ENTRYPOINT ["/agnhost"], CMD ["pause"].
//                /bin/sh is bash, not busybox: Debian's busybox ash runs its
//                own applets before searching PATH, so `sh -c "... | nc -u
//                ..."` (how the e2e tests exec) would get busybox's nc.
//                Upstream's agnhost (alpine) has bash too.
//                The same file holds a second image,
//                registry.k8s.io/e2e-test-images/agnhost:2.45, the one image
//                of the ClusterNetworkPolicy conformance suite
//                (sigs.k8s.io/network-policy-api v0.3.0; it uses connect,
//                serve-hostname and porter, which 2.56 has alike): 2.56 plus
//                a layer with the binary at /agnhost-bin and /agnhost a bash
//                wrapper (agnhostNPWrapper) that keeps `porter` containers
//                running when porter exits: the suite's pods serve SCTP with
//                porter, which exits at once on a kernel without SCTP, and
//                the crash-looping container would keep every pod from
//                Ready, failing the suite's setup, not just its SCTP tests.
//
// Every timestamp is the Created time (SOURCE_DATE_EPOCH, else the epoch):
// the same inputs give the same digests.

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The test images' references and the files they are written to.
const (
	PauseRef   = "registry.k8s.io/pause:3.10.1"
	BusyboxRef = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
	AgnhostRef = "registry.k8s.io/e2e-test-images/agnhost:2.56"
	// AgnhostNPRef is agnhost with agnhostNPWrapper, in AgnhostFile too.
	AgnhostNPRef = "registry.k8s.io/e2e-test-images/agnhost:2.45"
	PauseFile    = "pause.tar"
	BusyboxFile  = "busybox.tar"
	AgnhostFile  = "agnhost.tar"
	ListFile     = "images.txt" // one "file ref digest" line per image (see WriteTestImages)
	LibDir       = "/usr/lib/x86_64-linux-gnu"
	PauseUser    = "65535:65535"
)

//go:embed pause/main.go
var pauseSource []byte

// Tool is a host program copied into the agnhost image with its libraries,
// at Dst, with symlinks to it at Links.
type Tool struct {
	Src, Dst string
	Links    []string
}

// DefaultTools are the programs the e2e network tests exec in agnhost
// besides its own (upstream's image has them from alpine packages), and
// bash as /bin/sh (see above). Debian packages: curl, netcat-openbsd,
// bind9-dnsutils, libc-bin, iproute2, bash (scripts/runtimes-setup.sh).
var DefaultTools = []Tool{
	{Src: "/usr/bin/curl", Dst: "/usr/bin/curl"},
	{Src: "/usr/bin/nc.openbsd", Dst: "/usr/bin/nc"},
	{Src: "/usr/bin/dig", Dst: "/usr/bin/dig"},
	{Src: "/usr/bin/getent", Dst: "/usr/bin/getent"},
	{Src: "/usr/bin/ss", Dst: "/usr/bin/ss"},
	{Src: "/bin/bash", Dst: "/bin/bash", Links: []string{"/bin/sh"}},
}

// TestSpec is what goes into the test images.
type TestSpec struct {
	Busybox string // static busybox, e.g. /bin/busybox of busybox-static
	Agnhost string // upstream agnhost binary (tools/kubernetes/build.sh agnhost)
	Pause   string // prebuilt pause binary; "" builds pause/main.go
	// Porter is upstream's test/images/agnhost/porter directory: its
	// localhost.crt and .key go to / as in agnhost's Dockerfile (porter
	// serves TLS with them; the e2e proxy spec needs it). "": none.
	Porter  string
	Tools   []Tool    // added to agnhost with their libraries; nil means DefaultTools
	Search  []string  // library search path; nil means LibSearchPath
	Created time.Time // image and file timestamps
}

// TestImage is one built image and the file it goes to.
type TestImage struct {
	File  string
	Tag   name.Tag
	Image v1.Image
}

// layerBuilder writes a layer's tar: entries in call order, each parent
// directory (0755) before its first child, root-owned, mtime fixed.
type layerBuilder struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	mt   time.Time
	dirs map[string]bool
	err  error
}

func newLayer(mt time.Time) *layerBuilder {
	b := &layerBuilder{mt: mt.UTC(), dirs: map[string]bool{}}
	b.tw = tar.NewWriter(&b.buf)
	return b
}

func (b *layerBuilder) add(h *tar.Header, data []byte) {
	if b.err != nil {
		return
	}
	if d := path.Dir(strings.TrimSuffix(h.Name, "/")); d != "." {
		b.dir(d, 0o755)
	}
	h.ModTime, h.Format, h.Size = b.mt, tar.FormatPAX, int64(len(data))
	if b.err = b.tw.WriteHeader(h); b.err == nil && len(data) > 0 {
		_, b.err = b.tw.Write(data)
	}
}

func (b *layerBuilder) dir(p string, mode int64) {
	p = strings.Trim(p, "/")
	if p == "" || b.dirs[p] {
		return
	}
	b.dirs[p] = true
	b.add(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode}, nil)
}

func (b *layerBuilder) file(p string, mode int64, data []byte) {
	b.add(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: mode}, data)
}

func (b *layerBuilder) symlink(p, target string) {
	b.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(p, "/"), Linkname: target, Mode: 0o777}, nil)
}

func (b *layerBuilder) layer() (v1.Layer, error) {
	if b.err == nil {
		b.err = b.tw.Close()
	}
	if b.err != nil {
		return nil, b.err
	}
	data := b.buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// newImage is a linux/amd64 image of layers with one history entry per
// layer, all created at created, and cfg as its config.
func newImage(created time.Time, layers []v1.Layer, history []string, cfg v1.Config) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: created.UTC()}
	cf.History = nil
	for _, h := range history {
		cf.History = append(cf.History, v1.History{Created: cf.Created, CreatedBy: "podnet tools/image: " + h})
	}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// readStatic reads an ELF program that must be statically linked.
func readStatic(p string) ([]byte, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for _, pr := range f.Progs {
		if pr.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked", p)
		}
	}
	return os.ReadFile(p)
}

// busyboxLayer is the busybox root filesystem shared by the busybox and
// agnhost images: /bin/busybox, a symlink to it per applet (its
// --list-full), the usual directories, /etc/passwd and /etc/group.
func busyboxLayer(bb string, mt time.Time) (v1.Layer, error) {
	body, err := readStatic(bb)
	if err != nil {
		return nil, fmt.Errorf("busybox (install busybox-static): %w", err)
	}
	list, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", bb, err)
	}
	b := newLayer(mt)
	for _, d := range []string{"bin", "dev", "etc", "home", "proc", "run", "sbin", "sys", "usr/bin", "usr/sbin", "var"} {
		b.dir(d, 0o755)
	}
	b.dir("root", 0o700)
	b.dir("tmp", 0o1777)
	b.dir("var/tmp", 0o1777)
	b.file("bin/busybox", 0o755, body)
	b.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"))
	b.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	applets := strings.Fields(string(list))
	sort.Strings(applets)
	n := 0
	for _, a := range applets {
		// linuxrc is init's name in an initramfs, not a command.
		if a == "bin/busybox" || !strings.Contains(a, "/") || strings.HasPrefix(a, "/") || strings.Contains(a, "..") {
			continue
		}
		b.symlink(a, "/bin/busybox")
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s --list-full listed no applets", bb)
	}
	return b.layer()
}

// agnhostLayer goes over the busybox layer: agnhost as upstream's
// Dockerfile lays it out, and the tools with every library they need.
func agnhostLayer(s TestSpec) (v1.Layer, error) {
	body, err := os.ReadFile(s.Agnhost)
	if err != nil {
		return nil, fmt.Errorf("agnhost (tools/kubernetes/build.sh agnhost): %w", err)
	}
	if len(body) < 4 || string(body[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("%s: not an ELF binary", s.Agnhost)
	}
	tools, search := s.Tools, s.Search
	if tools == nil {
		tools = DefaultTools
	}
	if search == nil {
		search = LibSearchPath
	}
	b := newLayer(s.Created)
	b.file("agnhost", 0o755, body)
	b.symlink("agnhost-2", "agnhost")
	b.dir("uploads", 0o755)
	if s.Porter != "" {
		for _, f := range []string{"localhost.crt", "localhost.key"} {
			data, err := os.ReadFile(filepath.Join(s.Porter, f))
			if err != nil {
				return nil, fmt.Errorf("porter certificate: %w", err)
			}
			b.file(f, 0o644, data)
		}
	}
	// glibc's default for hosts without nsswitch.conf puts dns first.
	b.file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))
	libs := map[string]string{}
	interps := map[string]bool{}
	for _, t := range append([]Tool{{Src: s.Agnhost, Dst: "/agnhost"}}, tools...) {
		d, err := ResolveELF(t.Src, search)
		if err != nil {
			return nil, err
		}
		if t.Dst != "/agnhost" {
			data, err := os.ReadFile(t.Src)
			if err != nil {
				return nil, err
			}
			b.file(t.Dst, 0o755, data)
		}
		for _, l := range t.Links {
			b.symlink(l, relLink(l, t.Dst))
		}
		if d.Interp != "" {
			interps[d.Interp] = true
		}
		for n, p := range d.Libs {
			libs[n] = p
		}
	}
	interpNames := map[string]bool{}
	for i := range interps {
		interpNames[path.Base(i)] = true
	}
	for _, n := range sortedKeys(libs) {
		data, err := os.ReadFile(libs[n])
		if err != nil {
			return nil, err
		}
		mode := int64(0o644)
		if interpNames[n] {
			mode = 0o755
		}
		b.file(path.Join(LibDir, n), mode, data)
	}
	for _, i := range sortedKeys(interps) {
		switch {
		case path.Dir(i) == LibDir && libs[path.Base(i)] != "":
		case libs[path.Base(i)] != "":
			b.symlink(i, path.Join(LibDir, path.Base(i)))
		default:
			data, err := os.ReadFile(i)
			if err != nil {
				return nil, err
			}
			b.file(i, 0o755, data)
		}
	}
	return b.layer()
}

// relLink is the target of a symlink at link to dst: relative within one
// directory (/bin/sh -> bash), else dst.
func relLink(link, dst string) string {
	if path.Dir(link) == path.Dir(dst) {
		return path.Base(dst)
	}
	return dst
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// agnhostNPWrapper is /agnhost of the agnhost:2.45 image (see above): it
// runs /agnhost-bin, except that when `porter` exits (SCTP listen failed:
// "protocol not supported") it says so and pauses, so the container stays
// running and the pod Ready; the suite's SCTP probes then fail, as they
// must on such a kernel. PID 1 of a porter container is this bash (the
// suite's `bash -c "/agnhost porter"` execs it), so it forwards SIGTERM.
const agnhostNPWrapper = `#!/bin/bash
# podnet tools/image: agnhost:2.45 for the ClusterNetworkPolicy conformance
# suite in the podnet lab (tools/image/testimages.go).
if [ "$1" != porter ]; then
	exec /agnhost-bin "$@"
fi
trap 'kill $pid 2>/dev/null; exit 0' TERM INT
/agnhost-bin "$@" &
pid=$!
wait $pid
echo "agnhost porter exited ($?): no SCTP on this kernel? pausing, so the pod stays Ready" >&2
/agnhost-bin pause &
pid=$!
wait $pid
`

// agnhostNPLayer is the agnhost:2.45 image's top layer: /agnhost-bin (the
// agnhost binary) and /agnhost (agnhostNPWrapper).
func agnhostNPLayer(s TestSpec) (v1.Layer, error) {
	body, err := os.ReadFile(s.Agnhost)
	if err != nil {
		return nil, fmt.Errorf("agnhost (tools/kubernetes/build.sh agnhost): %w", err)
	}
	b := newLayer(s.Created)
	b.file("agnhost-bin", 0o755, body)
	b.file("agnhost", 0o755, []byte(agnhostNPWrapper))
	return b.layer()
}

// BuildTestImages builds the pause, busybox and agnhost images.
func BuildTestImages(s TestSpec) ([]TestImage, error) {
	if s.Pause == "" {
		tmp, err := os.MkdirTemp("", "podnet-pause-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if s.Pause, err = BuildPause(tmp); err != nil {
			return nil, err
		}
	}
	pause, err := readStatic(s.Pause)
	if err != nil {
		return nil, fmt.Errorf("pause: %w", err)
	}
	pb := newLayer(s.Created)
	pb.file("pause", 0o755, pause)
	pl, err := pb.layer()
	if err != nil {
		return nil, err
	}
	bl, err := busyboxLayer(s.Busybox, s.Created)
	if err != nil {
		return nil, err
	}
	al, err := agnhostLayer(s)
	if err != nil {
		return nil, err
	}
	nl, err := agnhostNPLayer(s)
	if err != nil {
		return nil, err
	}
	env := []string{EnvPath}
	ports := map[string]struct{}{"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}}
	var out []TestImage
	for _, c := range []struct {
		file, ref string
		layers    []v1.Layer
		history   []string
		cfg       v1.Config
	}{
		{PauseFile, PauseRef, []v1.Layer{pl}, []string{"/pause (pause/main.go)"},
			v1.Config{Entrypoint: []string{"/pause"}, User: PauseUser, Env: env, WorkingDir: "/"}},
		{BusyboxFile, BusyboxRef, []v1.Layer{bl}, []string{"busybox rootfs from " + s.Busybox},
			v1.Config{Cmd: []string{"sh"}, Env: env, WorkingDir: "/"}},
		{AgnhostFile, AgnhostRef, []v1.Layer{bl, al}, []string{"busybox rootfs from " + s.Busybox, "/agnhost, curl, nc, dig, getent, ss, bash and their libraries"},
			v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: env, WorkingDir: "/", ExposedPorts: ports}},
		{AgnhostFile, AgnhostNPRef, []v1.Layer{bl, al, nl}, []string{"busybox rootfs from " + s.Busybox, "/agnhost, curl, nc, dig, getent, ss, bash and their libraries", "/agnhost-bin, /agnhost the porter wrapper"},
			v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: env, WorkingDir: "/", ExposedPorts: ports}},
	} {
		tag, err := name.NewTag(c.ref, name.StrictValidation)
		if err != nil {
			return nil, err
		}
		img, err := newImage(s.Created, c.layers, c.history, c.cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.ref, err)
		}
		out = append(out, TestImage{File: c.file, Tag: tag, Image: img})
	}
	return out, nil
}

// WriteTestImages builds the images and writes each, tagged, as a tarball
// in dir (through a temporary file, renamed), then ListFile, last, so its
// presence means the set is complete. Images with the same File go into
// one tarball (go-containerregistry writes its manifest.json in map order:
// the tarball's bytes may vary, no digest does); `ctr images import`
// creates each. ListFile has a line per image. Its digests are the images' manifest
// digests as written here; `ctr images import` of a docker-archive writes
// its own manifest for the same config and layers, so containerd lists
// another (equally reproducible) digest.
func WriteTestImages(s TestSpec, dir string) ([]TestImage, error) {
	imgs, err := BuildTestImages(s)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var list strings.Builder
	var files []string
	refs := map[string]map[name.Reference]v1.Image{}
	for _, ti := range imgs {
		if refs[ti.File] == nil {
			files = append(files, ti.File)
			refs[ti.File] = map[name.Reference]v1.Image{}
		}
		refs[ti.File][ti.Tag] = ti.Image
	}
	for _, f := range files {
		out := filepath.Join(dir, f)
		if err := tarball.MultiRefWriteToFile(out+".tmp", refs[f]); err != nil {
			os.Remove(out + ".tmp")
			return nil, fmt.Errorf("write %s: %w", out, err)
		}
		if err := os.Rename(out+".tmp", out); err != nil {
			return nil, err
		}
	}
	for _, ti := range imgs {
		d, err := ti.Image.Digest()
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&list, "%s %s %s\n", ti.File, ti.Tag.Name(), d)
	}
	return imgs, os.WriteFile(filepath.Join(dir, ListFile), []byte(list.String()), 0o644)
}

// BuildPause compiles pause/main.go (embedded) into dir/pause: static,
// linux/amd64, stripped, without build ID or paths, so the same Go
// toolchain gives the same bytes.
func BuildPause(dir string) (string, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module podnet.local/pause\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), pauseSource, 0o644); err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") == "" {
			return "", errors.New("building pause: go not on PATH (or pass -pause)")
		}
	}
	out := filepath.Join(dir, "pause")
	cmd := exec.Command(goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building pause: %v\n%s", err, b)
	}
	return out, nil
}

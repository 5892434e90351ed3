// Command image owns podnet's container image: it assembles an OCI image
// holding the two podnet binaries (the multi-call CNI plugin binary `podnet`
// and the node agent `podnet-agent`) and writes it, tagged, as a tarball
// that `ctr images import`, `docker load`, `podman load` and registry tools
// (crane, skopeo) accept. No docker, no base image, no shell: the binaries
// are static, so the image is one layer with them and an empty /tmp.
//
// `make image` builds the binaries (CGO_ENABLED=0, linux/amd64) into
// bin/linux-amd64/ and runs this program (go -C tools/image run .) with
// -version from `git describe --tags --always --dirty` (podnet has no
// version constant), writing bin/podnet-image.tar tagged
// ghcr.io/podnet/podnet:VERSION, with SOURCE_DATE_EPOCH set to the commit's
// time so the same commit gives the same image digest.
//
// Layout: /usr/local/bin/podnet and /usr/local/bin/podnet-agent (0755),
// both on PATH, so `podnet agent` finds the agent next to itself and an init
// container can copy /usr/local/bin/podnet to the host's CNI bin dir and run
// `podnet plugins install` there. The entrypoint is the agent
// (`podnet-agent agent` by default; a DaemonSet passes its own args).
//
// With -test-images it builds instead the pause, busybox and agnhost images
// the lab's Kubernetes cluster and the e2e network tests run (testimages.go;
// tools/image/test-images.sh caches them):
//
//	go -C tools/image run . -test-images -agnhost /var/cache/podnet-test/agnhost-v1.34.4 -o DIR
//
// It is its own Go module (tools/image) so that go-containerregistry and its
// dependencies stay out of podnet's main module.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Where the binaries live in the image, and the image's defaults.
const (
	BinDir        = "/usr/local/bin"
	PodnetPath    = BinDir + "/podnet"
	AgentPath     = BinDir + "/podnet-agent"
	DefaultRepo   = "ghcr.io/podnet/podnet"
	DefaultSource = "https://github.com/podnet/podnet"
	Title         = "podnet"
	EnvPath       = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Spec is what goes into the image.
type Spec struct {
	Podnet, Agent string    // host paths of the two binaries
	Version       string    // image version label and tag
	Repo          string    // repository part of the tag, e.g. ghcr.io/podnet/podnet
	Source        string    // org.opencontainers.image.source
	Created       time.Time // image and file timestamps (fixed for reproducible images)
}

// Tag is the image reference the tarball is tagged with: Repo:Version, the
// version made a valid tag (characters outside [A-Za-z0-9_.-] become '-').
func (s Spec) Tag() (name.Tag, error) {
	if s.Version == "" {
		return name.Tag{}, errors.New("empty version")
	}
	v := []byte(s.Version)
	for i, c := range v {
		ok := c == '_' || c == '.' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok {
			v[i] = '-'
		}
	}
	if v[0] == '.' || v[0] == '-' {
		v = append([]byte("v"), v...)
	}
	if len(v) > 128 {
		v = v[:128]
	}
	repo := s.Repo
	if repo == "" {
		repo = DefaultRepo
	}
	return name.NewTag(repo+":"+string(v), name.StrictValidation)
}

// Build assembles the image: one layer with the binaries, config for
// linux/amd64 with the agent as entrypoint, the PATH and OCI labels.
func Build(s Spec) (v1.Image, error) {
	layerTar, err := layerTar(s)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: s.Created.UTC()}
	cf.History = []v1.History{{Created: cf.Created, CreatedBy: "podnet tools/image: " + BinDir + "/podnet, " + BinDir + "/podnet-agent"}}
	cf.Config = v1.Config{
		Entrypoint: []string{AgentPath},
		Cmd:        []string{"agent"},
		Env:        []string{EnvPath},
		WorkingDir: "/",
		Labels:     Labels(s),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// Labels are the image's OCI annotations-as-labels.
func Labels(s Spec) map[string]string {
	src := s.Source
	if src == "" {
		src = DefaultSource
	}
	return map[string]string{
		"org.opencontainers.image.title":   Title,
		"org.opencontainers.image.version": s.Version,
		"org.opencontainers.image.source":  src,
	}
}

// layerTar is the layer's uncompressed tar: the directories down to
// BinDir, /tmp (1777, for anything that wants os.TempDir) and the two
// binaries, mode 0755, owned by root, with s.Created as mtime.
func layerTar(s Spec) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := s.Created.UTC()
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mt, Format: tar.FormatPAX})
	}
	for _, d := range []string{"usr", "usr/local", "usr/local/bin"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, err
	}
	for _, f := range []struct{ src, dst string }{{s.Podnet, PodnetPath}, {s.Agent, AgentPath}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if len(data) < 4 || string(data[:4]) != "\x7fELF" {
			return nil, fmt.Errorf("%s: not an ELF binary", f.src)
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.dst, "/"), Mode: 0o755,
			Size: int64(len(data)), ModTime: mt, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Write builds the image and writes it, tagged, as a tarball at out
// (written to a temporary file and renamed, so out is never half-written).
func Write(s Spec, out string) (name.Tag, error) {
	tag, err := s.Tag()
	if err != nil {
		return name.Tag{}, err
	}
	img, err := Build(s)
	if err != nil {
		return name.Tag{}, err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return name.Tag{}, fmt.Errorf("write %s: %w", out, err)
	}
	return tag, os.Rename(tmp, out)
}

// createdTime is SOURCE_DATE_EPOCH when set (reproducible builds), else
// the Unix epoch: the same binaries always give the same image digest.
func createdTime() (time.Time, error) {
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		n, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Unix(0, 0).UTC(), nil
}

func main() {
	var s Spec
	var out string
	flag.StringVar(&s.Podnet, "podnet", "bin/linux-amd64/podnet", "the podnet binary (static, linux/amd64)")
	flag.StringVar(&s.Agent, "agent", "bin/linux-amd64/podnet-agent", "the podnet-agent binary (static, linux/amd64)")
	flag.StringVar(&s.Version, "version", "", "image version (label and tag), e.g. `git describe --tags --always --dirty`")
	flag.StringVar(&s.Repo, "repo", DefaultRepo, "image repository the tarball is tagged with")
	flag.StringVar(&s.Source, "source", DefaultSource, "org.opencontainers.image.source label")
	flag.StringVar(&out, "o", "bin/podnet-image.tar", "output tarball (with -test-images: output directory, required)")
	testImages := flag.Bool("test-images", false, "build the lab's test images ("+PauseFile+", "+BusyboxFile+", "+AgnhostFile+") into the -o directory instead")
	var ts TestSpec
	flag.StringVar(&ts.Agnhost, "agnhost", "/var/cache/podnet-test/agnhost-v1.34.4", "with -test-images: the agnhost binary (tools/kubernetes/build.sh agnhost)")
	flag.StringVar(&ts.Busybox, "busybox", "/bin/busybox", "with -test-images: static busybox (busybox-static)")
	flag.StringVar(&ts.Porter, "porter", "", "with -test-images: upstream's test/images/agnhost/porter directory (its TLS certificate and key go into agnhost)")
	flag.StringVar(&ts.Pause, "pause", "", "with -test-images: prebuilt static pause binary (default: build pause/main.go)")
	flag.Parse()
	var err error
	if s.Created, err = createdTime(); err != nil {
		fatal(err)
	}
	if *testImages {
		oSet := false
		flag.Visit(func(f *flag.Flag) { oSet = oSet || f.Name == "o" })
		if !oSet {
			fatal(errors.New("-test-images needs -o DIR"))
		}
		ts.Created = s.Created
		imgs, err := WriteTestImages(ts, out)
		if err != nil {
			fatal(err)
		}
		for _, ti := range imgs {
			p := filepath.Join(out, ti.File)
			st, err := os.Stat(p)
			if err != nil {
				fatal(err)
			}
			fmt.Printf("%s: %s (%.1f MiB)\n", p, ti.Tag.Name(), float64(st.Size())/(1<<20))
		}
		return
	}
	tag, err := Write(s, out)
	if err != nil {
		fatal(err)
	}
	st, err := os.Stat(out)
	if err != nil {
		fatal(err)
	}
	fmt.Printf("%s: %s (%.1f MiB)\n", path.Clean(out), tag.Name(), float64(st.Size())/(1<<20))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}

// Package e2e drives podnet's plugins with real CNI clients. It needs root:
// every test runs the client inside a "node" network namespace it creates
// (internal/roottest), so bridges, veths and nftables rules land there and
// the root namespace is never changed.
//
// The tools are prepared once per run: cnitool v1.3.1 is built with
// `go install` into a cache directory (reused by later runs; override with
// PODNET_E2E_CNITOOL=/path/to/cnitool; $PODNET_REF_DIR/cnitool, where CI
// installs it, is used when present), podnet is built into a temporary
// directory and `podnet plugins install` links the plugins next to it.
// PODNET_E2E_PLUGINS=DIR runs the tests against the plugins in DIR instead
// (the reference plugins, to check the tests themselves).
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/podnet/podnet/internal/roottest"
)

// CNIToolVersion is the cnitool release the tests drive.
const CNIToolVersion = "v1.3.1"

type toolset struct {
	cnitool   string
	podnet    string
	pluginDir string // CNI_PATH: podnet's plugin links
	// podnetPlugins is false when PODNET_E2E_PLUGINS points at other
	// plugins: assertions about podnet's own kernel objects (its nftables
	// tables) are then skipped.
	podnetPlugins bool
}

var (
	setupOnce sync.Once
	setupErr  error
	tools     toolset
	tmpRoot   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tmpRoot != "" {
		os.RemoveAll(tmpRoot)
	}
	os.Exit(code)
}

// needTools skips unless root and returns the tools, building them on first
// use.
func needTools(t *testing.T) toolset {
	t.Helper()
	roottest.Require(t)
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("e2e setup: %v", setupErr)
	}
	return tools
}

func setup() error {
	var err error
	if tools.cnitool, err = cnitool(); err != nil {
		return err
	}
	if tmpRoot, err = os.MkdirTemp("", "podnet-e2e-"); err != nil {
		return err
	}
	tools.podnet = filepath.Join(tmpRoot, "podnet")
	if out, err := exec.Command("go", "build", "-o", tools.podnet, "github.com/podnet/podnet/cmd/podnet").CombinedOutput(); err != nil {
		return fmt.Errorf("go build podnet: %v\n%s", err, out)
	}
	if d := os.Getenv("PODNET_E2E_PLUGINS"); d != "" {
		// Run the same tests against other plugins (e.g. the reference
		// ones) to check the tests themselves.
		tools.pluginDir = d
		return nil
	}
	tools.podnetPlugins = true
	tools.pluginDir = filepath.Join(tmpRoot, "cni-bin")
	if out, err := exec.Command(tools.podnet, "plugins", "install", "--dir", tools.pluginDir).CombinedOutput(); err != nil {
		return fmt.Errorf("podnet plugins install: %v\n%s", err, out)
	}
	return nil
}

// cnitool returns a cnitool binary, building it into the cache on first use.
func cnitool() (string, error) {
	if p := os.Getenv("PODNET_E2E_CNITOOL"); p != "" {
		return p, nil
	}
	// CI installs it next to the reference plugins.
	if d := os.Getenv("PODNET_REF_DIR"); d != "" {
		p := filepath.Join(d, "cnitool")
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = "/var/cache"
	}
	dir := filepath.Join(base, "podnet-test", "cnitool-"+CNIToolVersion)
	bin := filepath.Join(dir, "cnitool")
	if st, err := os.Stat(bin); err == nil && st.Mode()&0o111 != 0 {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@"+CNIToolVersion)
	cmd.Dir = dir // outside the podnet module
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("GOBIN=%s go install github.com/containernetworking/cni/cnitool@%s: %v\n%s", dir, CNIToolVersion, err, out)
	}
	return bin, nil
}

package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/podnet/podnet/agent/nodestate"
)

// ConflistName is the file the agent writes into the CNI configuration
// directory once the node's state is ready. "10-" sorts it before most
// other networks, as runtimes pick the first file.
const ConflistName = "10-podnet.conflist"

// NetworkName is the CNI network name in the conflist.
const NetworkName = "podnet"

// Conflist is the CNI network configuration list the agent writes: the
// podnet plugin (which reads stateDir/node.json) followed by portmap and
// bandwidth, the chain Kubernetes runtimes expect for hostPort and
// bandwidth annotations. A state directory other than the default is
// written into the podnet and portmap entries, so several agents on one
// machine (the lab) each have their own.
func Conflist(stateDir string) []byte {
	pn := map[string]any{"type": "podnet"}
	pm := map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}
	if stateDir != "" && filepath.Clean(stateDir) != nodestate.DefaultDir {
		pn["stateDir"] = stateDir
		pm["dataDir"] = filepath.Join(stateDir, "portmap")
	}
	list := map[string]any{
		// cniVersions (spec 1.1) lets a runtime whose libcni knows it pick
		// the highest version both sides support (1.1.0: GC, STATUS);
		// cniVersion is what older runtimes read, and containerd 1.6 and
		// CRI-O 1.2x reject a 1.1.0 list outright ("unsupported CNI result
		// version"), as the lab's Kubernetes nodes showed.
		"cniVersion":  "1.0.0",
		"cniVersions": []string{"1.0.0", "1.1.0"},
		"name":        NetworkName,
		"plugins": []any{
			pn,
			pm,
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}
	b, _ := json.MarshalIndent(list, "", "  ")
	return append(b, '\n')
}

// WriteConflist writes the conflist for stateDir into dir atomically (temp
// file + rename, mode 0644). An unchanged file is left alone.
func WriteConflist(dir, stateDir string) error {
	b := Conflist(stateDir)
	p := filepath.Join(dir, ConflistName)
	if old, err := os.ReadFile(p); err == nil && string(old) == string(b) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cni conflist: %w", err)
	}
	f, err := os.CreateTemp(dir, ".podnet.conflist.*")
	if err != nil {
		return fmt.Errorf("cni conflist: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp, p)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("cni conflist: write %s: %w", p, werr)
	}
	return nil
}

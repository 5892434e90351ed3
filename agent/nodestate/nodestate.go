// Package nodestate is the file the node agent writes for the podnet CNI
// plugin: which subnets this node leased, the gateway addresses and MTU pods
// use, and the cluster CIDRs. The agent writes it atomically (temp file +
// rename) so a plugin never reads half a file; the plugin only reads it.
// It imports nothing of the agent, so the plugin can import it cheaply.
package nodestate

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// FileName is the state file's name inside the state directory.
const FileName = "node.json"

// DefaultDir is the default state directory.
const DefaultDir = "/run/podnet"

// State is the content of node.json.
type State struct {
	Node string `json:"node"`
	// Subnets leased for this node's pods, one per family.
	Subnets []netip.Prefix `json:"subnets"`
	// Gateways, one per subnet: its first host address (10.244.1.1), for
	// the node side of a pod's link. The network address (.0) belongs to
	// the VXLAN device and is never given to a pod.
	Gateways     []netip.Addr   `json:"gateways"`
	MTU          int            `json:"mtu"`
	ClusterCIDRs []netip.Prefix `json:"clusterCIDRs"`
	Backend      string         `json:"backend"`
}

// GatewayFor returns the gateway address of subnet s: its first host.
func GatewayFor(s netip.Prefix) netip.Addr { return s.Masked().Addr().Next() }

// Path is the state file inside dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Write stores s in dir/node.json atomically.
func Write(dir string, s State) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".node.json.*")
	if err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(append(b, '\n'))
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp, Path(dir))
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("node state: write %s: %w", Path(dir), werr)
	}
	return nil
}

// Read loads dir/node.json. A missing file wraps os.ErrNotExist.
func Read(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(Path(dir))
	if err != nil {
		return s, fmt.Errorf("node state: %w (is the podnet agent running?)", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("node state: parse %s: %w", Path(dir), err)
	}
	return s, nil
}

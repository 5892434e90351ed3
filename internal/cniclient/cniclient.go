// Package cniclient is the runtime side of CNI, the part a container runtime
// (or cnitool) plays: it loads a network configuration list, builds the
// runtime configuration (container ID, netns, ifname, CNI_ARGS, capability
// args) and drives the plugins through libcni from
// github.com/containernetworking/cni. `podnet cni`, the benchmark and the
// end-to-end tests use it.
//
// It also owns starting processes inside a network namespace (NetnsExec,
// StartIn, RunIn), so that plugins, cnitool or podnet itself can be run
// inside a "node" namespace that a test or benchmark created, without
// touching the root namespace.
//
// It never programs the kernel itself; that is the plugins' job.
package cniclient

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/netns"
)

// Environment variables cnitool reads; `podnet cni` honours the same names.
const (
	EnvCNIPath        = "CNI_PATH"
	EnvNetConfPath    = "NETCONFPATH"
	EnvCNIArgs        = "CNI_ARGS"
	EnvCapabilityArgs = "CAP_ARGS"
	EnvIfName         = "CNI_IFNAME"

	DefaultConfDir = "/etc/cni/net.d"
	DefaultCNIPath = "/opt/cni/bin"
	DefaultIfName  = "eth0"
)

// Config says where the client finds configurations and plugins.
type Config struct {
	// ConfDir holds the *.conflist (and *.conf) files.
	ConfDir string
	// Path is the list of directories searched for plugin binaries.
	Path []string
	// CacheDir is libcni's result cache ("" = libcni's default, /var/lib/cni).
	CacheDir string
	// NodeNetns, if set, is the path of a network namespace every plugin is
	// started in (see NetnsExec). Empty: the caller's own namespace.
	NodeNetns string
	// Stderr receives what plugins print on stderr (nil: os.Stderr).
	Stderr io.Writer
}

// Client drives CNI plugins through libcni.
type Client struct {
	cfg Config
	cni *libcni.CNIConfig
}

// New returns a client for cfg.
func New(cfg Config) *Client {
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	raw := &invoke.RawExec{Stderr: cfg.Stderr}
	var ex invoke.Exec = &NetnsExec{Raw: raw}
	if cfg.NodeNetns != "" {
		ex = &NetnsExec{NS: cfg.NodeNetns, Raw: raw}
	}
	return &Client{cfg: cfg, cni: libcni.NewCNIConfigWithCacheDir(cfg.Path, cfg.CacheDir, ex)}
}

// LibCNI returns the underlying libcni handle.
func (c *Client) LibCNI() *libcni.CNIConfig { return c.cni }

// Load finds the network list named name in the configuration directory.
// A single-plugin .conf file is accepted and wrapped in a list, as libcni
// does.
func (c *Client) Load(name string) (*libcni.NetworkConfigList, error) {
	dir := c.cfg.ConfDir
	if dir == "" {
		dir = DefaultConfDir
	}
	list, err := libcni.LoadConfList(dir, name)
	if err != nil {
		return nil, fmt.Errorf("load network %q from %s: %w", name, dir, err)
	}
	return list, nil
}

// Attachment is one interface of one container on a network: the per-call
// part of the runtime configuration.
type Attachment struct {
	ContainerID    string
	NetNS          string
	IfName         string
	Args           [][2]string
	CapabilityArgs map[string]any
}

func (a Attachment) rt() *libcni.RuntimeConf {
	ifname := a.IfName
	if ifname == "" {
		ifname = DefaultIfName
	}
	cid := a.ContainerID
	if cid == "" {
		cid = DefaultContainerID(a.NetNS)
	}
	return &libcni.RuntimeConf{
		ContainerID:    cid,
		NetNS:          a.NetNS,
		IfName:         ifname,
		Args:           a.Args,
		CapabilityArgs: a.CapabilityArgs,
	}
}

// Add runs ADD through the list and caches the result.
func (c *Client) Add(ctx context.Context, list *libcni.NetworkConfigList, a Attachment) (types.Result, error) {
	return c.cni.AddNetworkList(ctx, list, a.rt())
}

// Check runs CHECK with the cached result of the last ADD.
func (c *Client) Check(ctx context.Context, list *libcni.NetworkConfigList, a Attachment) error {
	return c.cni.CheckNetworkList(ctx, list, a.rt())
}

// Del runs DEL (in reverse order) and drops the cached result.
func (c *Client) Del(ctx context.Context, list *libcni.NetworkConfigList, a Attachment) error {
	return c.cni.DelNetworkList(ctx, list, a.rt())
}

// GC deletes every cached attachment of the network that is not in valid,
// then (spec >= 1.1.0) sends GC with valid as cni.dev/valid-attachments so
// plugins free whatever else they hold for other attachments. An empty
// valid means no attachment is valid.
func (c *Client) GC(ctx context.Context, list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	if valid == nil {
		valid = []types.GCAttachment{} // "[]", not null: "none valid" rather than "unknown"
	}
	return c.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
}

// Status asks every plugin of the list (spec >= 1.1.0) whether it is ready
// for ADDs.
func (c *Client) Status(ctx context.Context, list *libcni.NetworkConfigList) error {
	return c.cni.GetStatusNetworkList(ctx, list)
}

// DefaultContainerID is the container ID cnitool v1.3.1 uses for a netns
// path: "cnitool-" and the hex of the first 10 bytes of its SHA-512. Using
// the same ID lets `podnet cni` and cnitool check or delete each other's
// attachments (their cache entries and IPAM reservations are keyed by it).
func DefaultContainerID(netnsPath string) string {
	s := sha512.Sum512([]byte(netnsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// ResolveNetns turns the NETNS argument into a path: a bare name (no "/")
// means /run/netns/NAME unless only ./NAME exists; anything else is made
// absolute, as cnitool does. The namespace need not exist (DEL after the
// netns is gone is legal).
func ResolveNetns(arg string) (string, error) {
	if arg == "" {
		return "", nil
	}
	if !strings.Contains(arg, "/") {
		p := netns.Path(arg)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if _, err := os.Stat(arg); err != nil {
			return p, nil
		}
	}
	return filepath.Abs(arg)
}

// ParseArgs parses CNI_ARGS ("K1=V1;K2=V2") into pairs.
func ParseArgs(s string) ([][2]string, error) {
	if s == "" {
		return nil, nil
	}
	var out [][2]string
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("CNI_ARGS: invalid pair %q (want KEY=VALUE, separated by ';')", pair)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// ParseCapabilityArgs parses the JSON object of capability arguments
// (runtimeConfig), e.g. {"portMappings":[...]}.
func ParseCapabilityArgs(s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("capability args: not a JSON object: %w", err)
	}
	return m, nil
}

// ParseAttachment parses "CONTAINERID:IFNAME" (IFNAME defaults to eth0).
func ParseAttachment(s string) (types.GCAttachment, error) {
	cid, ifname, ok := strings.Cut(s, ":")
	if !ok || ifname == "" {
		ifname = DefaultIfName
	}
	if cid == "" {
		return types.GCAttachment{}, fmt.Errorf("attachment %q: want CONTAINERID:IFNAME", s)
	}
	return types.GCAttachment{ContainerID: cid, IfName: ifname}, nil
}

// Package lab is `podnet lab`: a whole podnet cluster in network namespaces
// on one machine. A fabric namespace bridges the underlay (two L2 segments
// it routes between, plus an "external" segment outside the cluster), each
// node is a namespace with an underlay address and its own podnet agent
// process (`podnet-agent agent --netns ...`), an embedded etcd runs in a
// detached supervisor process (`podnet-agent lab serve`), and pods are
// namespaces attached through the real CNI plugins: libcni exec's the podnet
// binary's plugin links inside the node namespace with the conflist the
// node's agent wrote. Checks send real packets (internal/probe). Pods,
// their namespaces and network policies also exist as Kubernetes objects in
// the lab's etcd (objects.go, pods.go), written as a kubelet and kubectl
// would; the lab itself enforces no policy.
//
// Everything a lab makes is named after it: namespaces pl-<name>-*, files
// under /run/podnet-lab/<name>/ (lab.json records nodes, pods, addresses and
// pids), processes whose command line names that directory. Down removes
// exactly that, from lab.json or, when `up` died before writing it, by those
// names. The lab never touches the root namespace: no links, routes,
// nftables or sysctls there; its only root-namespace footprint is etcd and
// the agents talking over 127.0.0.1.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/podnet/podnet/internal/netns"
)

// DefaultRoot holds one directory per lab.
const DefaultRoot = "/run/podnet-lab"

// DefaultName is the lab's name when --name is not given.
const DefaultName = "lab"

// StateFile is the lab's record inside its directory.
const StateFile = "lab.json"

// Backends.
const (
	VXLAN  = "vxlan"
	HostGW = "host-gw"
	Auto   = "auto"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,12}$`)

// ValidName checks a lab name: 1-12 lower-case letters and digits (no '-',
// so one lab's namespace prefix pl-<name>- is never a prefix of another's).
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1-12 lower-case letters and digits", name)
	}
	return nil
}

// Lab is what lab.json records.
type Lab struct {
	Name    string `json:"name"`
	Dir     string `json:"dir"`
	Backend string `json:"backend"`
	// Phase is "creating" until up finished, then "up".
	Phase       string       `json:"phase"`
	ClusterCIDR netip.Prefix `json:"clusterCIDR"`
	// ClusterCIDR6 is the IPv6 pod range of a dual-stack lab (--ipv6),
	// absent (invalid) in an IPv4-only one.
	ClusterCIDR6 netip.Prefix `json:"clusterCIDR6,omitzero"`
	// Fabric is the namespace bridging the underlay segments (br0, br1);
	// Router routes between them and to External.
	Fabric   string   `json:"fabricNetns"`
	Router   string   `json:"routerNetns"`
	External Endpoint `json:"external"`
	Etcd     Etcd     `json:"etcd"`
	Nodes    []*Node  `json:"nodes"`
	Pods     []*Pod   `json:"pods"`
	// Kubernetes is set in a lab started with --kubernetes (kube.go): the
	// nodes run kubelets and podnet is the DaemonSet of deploy/podnet.yaml;
	// Etcd, AgentPID and Pods are unused.
	Kubernetes *Kube `json:"kubernetes,omitempty"`
	// Binaries the lab runs.
	AgentBin  string `json:"agentBin"`
	PodnetBin string `json:"podnetBin"`
}

// Endpoint is a namespace with one address.
type Endpoint struct {
	Netns string     `json:"netns"`
	IP    netip.Addr `json:"ip"`
}

// Etcd is the supervisor process hosting the embedded etcd.
type Etcd struct {
	PID       int      `json:"pid"`
	Endpoints []string `json:"endpoints"`
	// PeerURL lets a restarted etcd come back on the same URLs, where the
	// agents (started with --etcd-endpoints) look for it.
	PeerURL string `json:"peerURL,omitempty"`
}

// Node is one lab node.
type Node struct {
	Name     string         `json:"name"`
	Netns    string         `json:"netns"`
	Segment  int            `json:"segment"`
	IP       netip.Addr     `json:"ip"`
	StateDir string         `json:"stateDir"`
	ConfDir  string         `json:"cniConfDir"`
	AgentPID int            `json:"agentPID"`
	Subnets  []netip.Prefix `json:"subnets,omitempty"`
}

// Pod is one lab pod; its Pod object is in the lab's etcd (objects.go).
type Pod struct {
	// Namespace is the Kubernetes namespace ("" in a lab.json written
	// before pods had objects: default).
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Node        string            `json:"node"`
	Netns       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	IPs         []netip.Addr      `json:"ips,omitempty"`
}

// NetnsPath is the bind-mount path of a lab namespace.
func NetnsPath(name string) string { return netns.Path(name) }

// Dir is the directory of lab name under root ("" = DefaultRoot).
func Dir(root, name string) string {
	if root == "" {
		root = DefaultRoot
	}
	return filepath.Join(root, name)
}

// nsPrefix is the prefix of every namespace of lab name.
func nsPrefix(name string) string { return "pl-" + name + "-" }

// plan derives a lab's address plan from its name, so labs that coexist
// usually get distinct underlay and pod ranges (namespaces keep them apart
// anyway): underlay 100.<64+k>.<seg>.0/24, external 100.<64+k>.9.0/24,
// pods 10.<64+k>.0.0/16.
func plan(name string) (base int) {
	h := fnv.New32a()
	h.Write([]byte(name))
	return 64 + int(h.Sum32()%64)
}

// clusterCIDR6 is a dual-stack lab's IPv6 pod range, the ULA
// fd10:0:<base>::/48 (base written in decimal digits, as in 10.<base>.0.0/16),
// so labs that coexist usually get distinct ones as they do IPv4 ranges.
func clusterCIDR6(base int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("fd10:0:%d::/48", base))
}

func underlayIP(base, seg, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, byte(base), byte(seg), byte(host)})
}

// Load reads lab.json of lab name under root.
func Load(root, name string) (*Lab, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(Dir(root, name), StateFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q is not up (no %s): run `podnet lab up --name %s`: %w", name, p, name, err)
	}
	if err != nil {
		return nil, err
	}
	l := &Lab{}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	for _, p := range l.Pods {
		p.Namespace = p.namespace()
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
	}
	return l, nil
}

// Save writes lab.json atomically.
func (l *Lab) Save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(l.Dir, StateFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Node returns the node called name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Pod returns the pod called name ("NS/NAME", or NAME for a pod in the
// default namespace, or the first pod called NAME), or nil.
func (l *Lab) Pod(name string) *Pod {
	for _, p := range l.Pods {
		if p.Ref() == name || p.namespace()+"/"+p.Name == name {
			return p
		}
	}
	for _, p := range l.Pods {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (p *Pod) namespace() string {
	if p.Namespace == "" {
		return DefaultNamespace
	}
	return p.Namespace
}

// Ref names the pod in the lab's commands and check tables: NAME in the
// default namespace, else NS/NAME.
func (p *Pod) Ref() string {
	if p.namespace() == DefaultNamespace {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// PodsOn returns the pods of node.
func (l *Lab) PodsOn(node string) []*Pod {
	var out []*Pod
	for _, p := range l.Pods {
		if p.Node == node {
			out = append(out, p)
		}
	}
	return out
}

// IPv4 returns the pod's first IPv4 address.
func (p *Pod) IPv4() netip.Addr {
	for _, a := range p.IPs {
		if a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// IPv6 returns the pod's first IPv6 address (invalid in an IPv4-only lab).
func (p *Pod) IPv6() netip.Addr {
	for _, a := range p.IPs {
		if a.Is6() && !a.Is4In6() {
			return a
		}
	}
	return netip.Addr{}
}

// MetricsAddress is where the node's agent serves /metrics, /healthz and
// /readyz: a unix socket in its state directory (no TCP port anywhere).
func (n *Node) MetricsAddress() string { return "unix:" + filepath.Join(n.StateDir, "metrics.sock") }

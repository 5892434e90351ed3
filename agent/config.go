package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/agent/overlay"
)

// Defaults.
const (
	DefaultVNI         = 1
	DefaultPort        = 8472
	DefaultSubnetLenV4 = 24
	DefaultSubnetLenV6 = 64
	DefaultResync      = 5 * time.Second
	DefaultLeaseTTL    = 60 * time.Second
	// maxSubnetBits bounds how many node subnets one cluster CIDR holds
	// (2^20), which bounds the allocator's search.
	maxSubnetBits = 20
)

// Config is the agent's whole configuration. Zero values mean the defaults
// that WithDefaults fills in.
type Config struct {
	// NodeName identifies this node in the datastore (default: hostname,
	// filled in by the command).
	NodeName string
	// ClusterCIDRs: one IPv4 and optionally one IPv6 (or IPv6 only).
	ClusterCIDRs []netip.Prefix
	// SubnetLenV4/V6: prefix length of each node's subnet (24 / 64).
	SubnetLenV4, SubnetLenV6 int
	// Backend: vxlan (default), host-gw, or auto (host-gw to nodes on our
	// underlay L2 subnet, vxlan to the others).
	Backend string
	VNI     int // default 1
	Port    int // VXLAN UDP port, default 8472
	// MTU of pods and the VXLAN device; 0 = underlay MTU - 50 (vxlan,
	// auto) or the underlay MTU (host-gw).
	MTU int
	// Underlay selects the interface carrying node-to-node traffic: ""
	// or "auto" = the one holding the default route; a CIDR = the one
	// with an address inside it; anything else = an interface name.
	Underlay string
	// StateDir holds node.json for the CNI plugin (default /run/podnet).
	StateDir string
	// CNIConfDir, if set, receives the podnet conflist (ConflistName)
	// once node.json is written. Empty: no conflist is written (the
	// command's --cni-conf-dir defaults to /etc/cni/net.d).
	CNIConfDir string
	// NetNS is the network namespace the agent programs ("" = its own).
	// The lab runs one agent process per node namespace.
	NetNS string
	// ResyncInterval: full reconcile even without events (default 5s).
	ResyncInterval time.Duration
	// PolicyLogGroup is the NFLOG group policy drops are logged to
	// (rate-limited; read by `podnet policy log`); negative: none.
	PolicyLogGroup int
	Datastore      DatastoreConfig
}

// DefaultPolicyLogGroup is the NFLOG group of policy drops.
const DefaultPolicyLogGroup = 8272

// DatastoreConfig selects and configures the datastore.
type DatastoreConfig struct {
	Type      string // "etcd" (default) or "kubernetes"
	Endpoints []string
	CertFile  string
	KeyFile   string
	CAFile    string
	Prefix    string        // default /podnet/v1
	LeaseTTL  time.Duration // default 60s
	// Kubeconfig (kubernetes): a kubeconfig file; "" = in-cluster config.
	Kubeconfig string
	// Log is where the store logs (kubernetes: waiting for the node's
	// pod CIDRs); nil discards. Not configuration, just plumbing.
	Log *slog.Logger
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.SubnetLenV4 == 0 {
		c.SubnetLenV4 = DefaultSubnetLenV4
	}
	if c.SubnetLenV6 == 0 {
		c.SubnetLenV6 = DefaultSubnetLenV6
	}
	if c.Backend == "" {
		c.Backend = overlay.VXLAN
	}
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.StateDir == "" {
		c.StateDir = nodestate.DefaultDir
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResync
	}
	if c.Datastore.Type == "" {
		c.Datastore.Type = "etcd"
	}
	if c.Datastore.LeaseTTL == 0 {
		c.Datastore.LeaseTTL = DefaultLeaseTTL
	}
	return c
}

func fieldErr(field, format string, a ...any) error {
	return fmt.Errorf("agent config: field %q: %s", field, fmt.Sprintf(format, a...))
}

// Validate checks c (after WithDefaults) and names the field at fault.
func (c Config) Validate() error {
	var errs []error
	add := func(field, format string, a ...any) { errs = append(errs, fieldErr(field, format, a...)) }
	if c.PolicyLogGroup > 65535 {
		add("policy-log-group", "%d: an NFLOG group is 0-65535 (negative: none)", c.PolicyLogGroup)
	}

	switch {
	case c.NodeName == "":
		add("nodeName", "empty: set the node's name")
	case len(c.NodeName) > 253 || strings.ContainsAny(c.NodeName, "/ \t\n"):
		add("nodeName", "%q must be at most 253 characters without '/' or spaces", c.NodeName)
	}
	var n4, n6 int
	if len(c.ClusterCIDRs) == 0 {
		add("clusterCIDRs", "empty: give one IPv4 and optionally one IPv6 CIDR, e.g. 10.244.0.0/16")
	}
	for _, p := range c.ClusterCIDRs {
		if !p.IsValid() {
			add("clusterCIDRs", "invalid prefix")
			continue
		}
		if p.Masked() != p {
			add("clusterCIDRs", "%s has host bits set: use %s", p, p.Masked())
		}
		sub, field, max := c.SubnetLenV4, "subnetLenV4", 30
		if p.Addr().Is4() {
			n4++
		} else {
			n6++
			sub, field, max = c.SubnetLenV6, "subnetLenV6", 126
		}
		switch {
		case sub <= p.Bits() || sub > max:
			add(field, "/%d does not fit cluster CIDR %s: must be longer than /%d and at most /%d", sub, p, p.Bits(), max)
		case sub-p.Bits() > maxSubnetBits:
			add(field, "/%d in %s makes %d subnets: at most 2^%d (use a longer cluster prefix or shorter subnets)", sub, p, uint64(1)<<(sub-p.Bits()), maxSubnetBits)
		}
	}
	if n4 > 1 || n6 > 1 {
		add("clusterCIDRs", "%v: at most one IPv4 and one IPv6 CIDR", c.ClusterCIDRs)
	}
	switch c.Backend {
	case overlay.VXLAN, overlay.HostGW, overlay.Auto:
	default:
		add("backend", "%q: must be vxlan, host-gw or auto", c.Backend)
	}
	if c.VNI < 1 || c.VNI > 1<<24-1 {
		add("vni", "%d: must be 1..16777215", c.VNI)
	}
	if c.Port < 1 || c.Port > 65535 {
		add("port", "%d: must be 1..65535", c.Port)
	}
	minMTU := 576
	if n6 > 0 {
		minMTU = 1280
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > 65535) {
		add("mtu", "%d: must be 0 (auto) or %d..65535", c.MTU, minMTU)
	}
	if u := c.Underlay; u != "" && u != "auto" && strings.Contains(u, "/") {
		if _, err := netip.ParsePrefix(u); err != nil {
			add("underlay", "%q is neither an interface name nor a CIDR: %v", u, err)
		}
	} else if len(u) > 15 {
		add("underlay", "interface name %q is longer than 15 characters", u)
	}
	if c.StateDir == "" || !strings.HasPrefix(c.StateDir, "/") {
		add("stateDir", "%q must be an absolute path", c.StateDir)
	}
	if c.CNIConfDir != "" && !strings.HasPrefix(c.CNIConfDir, "/") {
		add("cniConfDir", "%q must be an absolute path", c.CNIConfDir)
	}
	if c.ResyncInterval < 100*time.Millisecond {
		add("resyncInterval", "%s is below 100ms", c.ResyncInterval)
	}
	d := c.Datastore
	switch d.Type {
	case "etcd":
		if len(d.Endpoints) == 0 {
			add("datastore.endpoints", "empty: give at least one etcd URL, e.g. https://10.0.0.1:2379")
		}
		for _, e := range d.Endpoints {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("datastore.endpoints", "%q is not an http(s)://host:port URL", e)
			}
		}
		if (d.CertFile == "") != (d.KeyFile == "") {
			add("datastore.certFile", "cert and key must be given together (cert %q, key %q)", d.CertFile, d.KeyFile)
		}
		if d.LeaseTTL < 2*time.Second {
			add("datastore.leaseTTL", "%s is below the 2s minimum", d.LeaseTTL)
		}
	case "kubernetes":
		// Kubeconfig "" = in-cluster; the node's subnets are its
		// spec.podCIDRs, so nothing else to check here.
	default:
		add("datastore.type", "%q: must be etcd or kubernetes", d.Type)
	}
	return errors.Join(errs...)
}

// underlaySpec says how Underlay selects the interface.
func (c Config) underlaySpec() (name string, cidr netip.Prefix) {
	u := c.Underlay
	if u == "" || u == "auto" {
		return "", netip.Prefix{}
	}
	if p, err := netip.ParsePrefix(u); err == nil {
		return "", p.Masked()
	}
	return u, netip.Prefix{}
}

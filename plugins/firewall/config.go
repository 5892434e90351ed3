package firewall

import (
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
)

// Ingress policies, with the reference plugin's names.
const (
	PolicyOpen       = "open"
	PolicySameBridge = "same-bridge"
	PolicyIsolated   = "isolated"
)

// netConf is the JSON the runtime passes, with the reference plugin's
// field names.
type netConf struct {
	types.NetConf

	// Backend is "iptables", "firewalld", absent or anything else (the
	// reference falls back to its default); every one is served by
	// podnet's nftables table.
	Backend string `json:"backend,omitempty"`
	// IptablesAdminChainName is accepted for compatibility; podnet's admin
	// chain is always "admin" in its own table.
	IptablesAdminChainName string `json:"iptablesAdminChainName,omitempty"`
	// FirewalldZone is accepted and ignored (no firewalld involved).
	FirewalldZone string `json:"firewalldZone,omitempty"`
	IngressPolicy string `json:"ingressPolicy,omitempty"`
}

// Config is the validated configuration.
type Config struct {
	Network string
	Backend string
	// Policy is PolicyOpen, PolicySameBridge or PolicyIsolated ("" and
	// "open" both become PolicyOpen).
	Policy string

	conf *netConf
}

// ParseConfig decodes and validates stdin: what ADD, CHECK and STATUS use.
func ParseConfig(stdin []byte) (*Config, error) { return cniplugin.Validated(Decode(stdin)) }

// Decode reads stdin without ADD's checks: DEL and GC find the
// attachment's elements by their tag (network, container, interface) and
// need nothing else (docs/del.md).
//
// Any backend is accepted, as in the reference plugin v1.9.1 (which falls
// back to firewalld-if-running-else-iptables for a value it does not
// know): podnet serves every backend with its own nftables table, so the
// value changes nothing.
func Decode(stdin []byte) (*Config, error) {
	conf := &netConf{}
	if err := cniplugin.Decode(name, stdin, conf); err != nil {
		return nil, err
	}
	return &Config{Network: conf.Name, Backend: conf.Backend, conf: conf}, nil
}

// Validate makes ADD's checks and sets Policy.
func (c *Config) Validate() error {
	switch p := c.conf.IngressPolicy; p {
	case "", PolicyOpen:
		c.Policy = PolicyOpen
	case PolicySameBridge, PolicyIsolated:
		c.Policy = p
	default:
		return cnierr.Field(name, "ingressPolicy", "%q is not an ingress policy; use %q (the default), %q or %q", p, PolicyOpen, PolicySameBridge, PolicyIsolated)
	}
	return nil
}

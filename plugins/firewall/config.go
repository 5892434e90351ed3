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

	// Backend is "iptables", "firewalld" or absent; every one is served by
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

// ParseConfig decodes and validates stdin.
func ParseConfig(stdin []byte) (*Config, error) {
	conf := &netConf{}
	if err := cniplugin.Decode(name, stdin, conf); err != nil {
		return nil, err
	}
	c := &Config{Network: conf.Name, Backend: conf.Backend, conf: conf}
	switch conf.Backend {
	case "", "iptables", "firewalld":
	default:
		return nil, cnierr.Field(name, "backend", "%q is not a firewall backend; use \"iptables\" or \"firewalld\" (podnet serves both with its nftables table) or leave it out", conf.Backend)
	}
	switch conf.IngressPolicy {
	case "", PolicyOpen:
		c.Policy = PolicyOpen
	case PolicySameBridge, PolicyIsolated:
		c.Policy = conf.IngressPolicy
	default:
		return nil, cnierr.Field(name, "ingressPolicy", "%q is not an ingress policy; use %q (the default), %q or %q", conf.IngressPolicy, PolicyOpen, PolicySameBridge, PolicyIsolated)
	}
	return c, nil
}

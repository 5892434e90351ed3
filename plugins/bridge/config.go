package bridge

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
)

// DefaultBridge is the bridge name when the config names none.
const DefaultBridge = "cni0"

// Conf is the bridge plugin's network configuration: every field of the
// reference plugin, with the VLAN ones rejected (see Parse).
type Conf struct {
	types.NetConf

	BrName                    string       `json:"bridge"`
	IsGW                      bool         `json:"isGateway"`
	IsDefaultGW               bool         `json:"isDefaultGateway"`
	ForceAddress              bool         `json:"forceAddress"`
	IPMasq                    bool         `json:"ipMasq"`
	IPMasqBackend             *string      `json:"ipMasqBackend,omitempty"`
	MTU                       int          `json:"mtu"`
	HairpinMode               bool         `json:"hairpinMode"`
	PromiscMode               bool         `json:"promiscMode"`
	Vlan                      int          `json:"vlan"`
	VlanTrunk                 []*VlanTrunk `json:"vlanTrunk,omitempty"`
	PreserveDefaultVlan       bool         `json:"preserveDefaultVlan"`
	MacSpoofChk               bool         `json:"macspoofchk,omitempty"`
	EnableDad                 bool         `json:"enabledad,omitempty"`
	DisableContainerInterface bool         `json:"disableContainerInterface,omitempty"`
	PortIsolation             bool         `json:"portIsolation,omitempty"`

	Args struct {
		Cni struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// MAC is the pod interface's MAC from CNI_ARGS MAC=, args.cni.mac or
	// runtimeConfig.mac (later ones win, as in the reference); nil = random.
	MAC net.HardwareAddr `json:"-"`

	envArgs string // CNI_ARGS, for Validate
}

// VlanTrunk is one vlanTrunk entry (accepted for decoding, then rejected).
type VlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}

// L3 reports whether the config has IPAM (an L2-only bridge has none).
func (c *Conf) L3() bool { return c.IPAM.Type != "" }

const noVlanFiltering = "bridge VLAN filtering is not available on this node (its kernel is built without CONFIG_BRIDGE_VLAN_FILTERING and 8021q); remove the field"

// Parse decodes and validates stdin; envArgs is CNI_ARGS. Errors are CNI
// errors naming the field: code 6 for JSON of the wrong type, 7 for a bad
// value, 2 for a field this node cannot honour, 4 for a bad CNI_ARGS MAC.
// It is what ADD, CHECK and STATUS use: Decode, then Validate.
func Parse(stdin []byte, envArgs string) (*Conf, error) {
	return cniplugin.Validated(Decode(stdin, envArgs))
}

// Decode reads stdin without ADD's checks: what DEL and GC need (the
// network name, the bridge, ipMasq, macspoofchk, the IPAM type) and
// nothing they could fail on but JSON of the wrong type (code 6). A
// negative mtu means the kernel's default, as in the reference plugin
// (which sends the MTU to the kernel only when it is positive).
func Decode(stdin []byte, envArgs string) (*Conf, error) {
	c := &Conf{BrName: DefaultBridge, envArgs: envArgs}
	if err := cniplugin.Decode(name, stdin, c); err != nil {
		return nil, err
	}
	if c.BrName == "" {
		c.BrName = DefaultBridge
	}
	if c.MTU < 0 {
		c.MTU = 0
	}
	if c.IsDefaultGW {
		c.IsGW = true
	}
	return c, nil
}

// Validate makes ADD's checks and sets MAC.
func (c *Conf) Validate() error {
	if err := ValidIfName(c.BrName); err != nil {
		return cnierr.Field(name, "bridge", "%q %v", c.BrName, err)
	}
	if err := netlinkx.ValidMTU(c.MTU); err != nil {
		return cnierr.Field(name, "mtu", "%v", err)
	}
	if c.Vlan < 0 || c.Vlan > 4094 {
		return cnierr.Field(name, "vlan", "%d is outside 0-4094", c.Vlan)
	}
	if c.Vlan != 0 {
		return cnierr.Unsupported(name, "vlan", noVlanFiltering)
	}
	if len(c.VlanTrunk) > 0 {
		return cnierr.Unsupported(name, "vlanTrunk", noVlanFiltering)
	}
	if b := c.IPMasqBackend; b != nil && *b != "nftables" && *b != "iptables" {
		return cnierr.Field(name, "ipMasqBackend", "%q is neither \"nftables\" nor \"iptables\"", *b)
	}
	if c.HairpinMode && c.PromiscMode {
		return cnierr.Field(name, "hairpinMode", "cannot be set together with promiscMode")
	}
	if c.DisableContainerInterface && c.L3() {
		return cnierr.Field(name, "disableContainerInterface", "cannot be set with ipam: a down interface cannot be given addresses")
	}
	mac, err := cniplugin.PodMAC(name,
		cniplugin.MACSource{Field: "CNI_ARGS", Value: cniplugin.MACFromEnvArgs(c.envArgs)},
		cniplugin.MACSource{Field: "args.cni.mac", Value: c.Args.Cni.Mac},
		cniplugin.MACSource{Field: "runtimeConfig.mac", Value: c.RuntimeConfig.Mac})
	if err != nil {
		return err
	}
	c.MAC = mac
	return nil
}

// ValidIfName checks a Linux interface name.
func ValidIfName(s string) error { return netlinkx.ValidIfName(s) }

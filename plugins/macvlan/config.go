package macvlan

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
)

// Conf is the macvlan configuration: the reference plugin's fields.
type Conf struct {
	types.NetConf
	// Master is the parent interface; empty means the interface of the
	// default route (in the pod's namespace with LinkInContainer).
	Master string `json:"master"`
	Mode   string `json:"mode"`
	MTU    int    `json:"mtu"`
	Mac    string `json:"mac,omitempty"`
	// LinkInContainer: Master is in the pod's namespace, not the node's.
	LinkInContainer bool `json:"linkInContainer,omitempty"`
	RuntimeConfig   struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// MAC is the pod interface's MAC from mac, CNI_ARGS MAC= or
	// runtimeConfig.mac (later ones win, as in the reference); nil = the
	// kernel's random one.
	MAC net.HardwareAddr `json:"-"`
	// LinkMode is Mode for netlink.
	LinkMode netlink.MacvlanMode `json:"-"`

	envArgs string // CNI_ARGS, for Validate
}

// L3 reports whether the config has IPAM ("ipam": {} makes an L2-only
// interface, as in the reference).
func (c *Conf) L3() bool { return c.IPAM.Type != "" }

var modes = map[string]netlink.MacvlanMode{
	"":         netlink.MACVLAN_MODE_BRIDGE,
	"bridge":   netlink.MACVLAN_MODE_BRIDGE,
	"private":  netlink.MACVLAN_MODE_PRIVATE,
	"vepa":     netlink.MACVLAN_MODE_VEPA,
	"passthru": netlink.MACVLAN_MODE_PASSTHRU,
}

// ModeName is the config name of a macvlan mode.
func ModeName(m netlink.MacvlanMode) string {
	for _, n := range []string{"bridge", "private", "vepa", "passthru"} {
		if modes[n] == m {
			return n
		}
	}
	return "unknown"
}

// Parse decodes and validates stdin; envArgs is CNI_ARGS. Errors are CNI
// errors naming the field: code 6 for JSON of the wrong type, 7 for a bad
// value, 4 for a bad CNI_ARGS MAC. What needs the kernel (the master
// exists, the MTU fits it) is checked by ADD.
func Parse(stdin []byte, envArgs string) (*Conf, error) {
	return cniplugin.Validated(Decode(stdin, envArgs))
}

// Decode reads stdin without ADD's checks: DEL and GC need only the IPAM
// type (docs/del.md).
func Decode(stdin []byte, envArgs string) (*Conf, error) {
	c := &Conf{envArgs: envArgs}
	if err := cniplugin.Decode(name, stdin, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate makes ADD's checks and sets LinkMode and MAC.
func (c *Conf) Validate() error {
	if c.Master != "" {
		if err := netlinkx.ValidIfName(c.Master); err != nil {
			return cnierr.Field(name, "master", "%q %v", c.Master, err)
		}
	}
	m, ok := modes[c.Mode]
	if !ok {
		return cnierr.Field(name, "mode", "%q is not one of bridge, private, vepa, passthru", c.Mode)
	}
	c.LinkMode = m
	if err := netlinkx.ValidMTU(c.MTU); err != nil {
		return cnierr.Field(name, "mtu", "%v", err)
	}
	mac, err := cniplugin.RefMAC(name, c.Mac, c.envArgs, c.RuntimeConfig.Mac)
	if err != nil {
		return err
	}
	c.MAC = mac
	return nil
}

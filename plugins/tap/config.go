package tap

import (
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
)

// Conf is the tap configuration: the reference plugin's fields.
type Conf struct {
	types.NetConf
	MultiQueue     bool    `json:"multiQueue"`
	MTU            int     `json:"mtu"`
	Mac            string  `json:"mac,omitempty"`
	Owner          *uint32 `json:"owner,omitempty"`
	Group          *uint32 `json:"group,omitempty"`
	SelinuxContext string  `json:"selinuxContext,omitempty"`
	// Bridge, when set, is a bridge in the pod's namespace the tap becomes
	// a port of (as the reference); it must exist there.
	Bridge        string `json:"bridge,omitempty"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// MAC is the tap's MAC from mac, CNI_ARGS MAC= or runtimeConfig.mac
	// (later ones win, as in the reference); nil = the kernel's random one.
	MAC net.HardwareAddr `json:"-"`

	envArgs string // CNI_ARGS, for Validate
}

// Parse decodes and validates stdin; envArgs is CNI_ARGS. Errors are CNI
// errors naming the field: code 6 for JSON of the wrong type, 7 for a bad
// value, 4 for a bad CNI_ARGS MAC, 2 for selinuxContext.
func Parse(stdin []byte, envArgs string) (*Conf, error) {
	return cniplugin.Validated(Decode(stdin, envArgs))
}

// Decode reads stdin without ADD's checks: DEL and GC need only the IPAM
// type (docs/del.md). A negative mtu means the kernel's default, as in the
// reference plugin.
func Decode(stdin []byte, envArgs string) (*Conf, error) {
	c := &Conf{envArgs: envArgs}
	if err := cniplugin.Decode(name, stdin, c); err != nil {
		return nil, err
	}
	if c.MTU < 0 {
		c.MTU = 0
	}
	return c, nil
}

// Validate makes ADD's checks and sets MAC.
func (c *Conf) Validate() error {
	if err := netlinkx.ValidMTU(c.MTU); err != nil {
		return cnierr.Field(name, "mtu", "%v", err)
	}
	if len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/: \t\n\x00") {
		return cnierr.Field(name, "bridge", "%q is not an interface name (1-15 bytes, no '/', ':' or whitespace)", c.Bridge)
	}
	for _, id := range []struct {
		field string
		v     *uint32
	}{{"owner", c.Owner}, {"group", c.Group}} {
		// (uid_t)-1 is the kernel's "nobody set": not an ID to hand out.
		if id.v != nil && *id.v == ^uint32(0) {
			return cnierr.Field(name, id.field, "%d is not a valid ID; leave the field out for no %s", *id.v, id.field)
		}
	}
	if c.SelinuxContext != "" {
		return cnierr.Unsupported(name, "selinuxContext", "SELinux labelling is not available on this node (podnet is built and tested without SELinux); remove the field")
	}
	mac, err := cniplugin.RefMAC(name, c.Mac, c.envArgs, c.RuntimeConfig.Mac)
	if err != nil {
		return err
	}
	c.MAC = mac
	return nil
}

package hostdevice

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
)

// Conf is the host-device configuration: the reference plugin's fields.
type Conf struct {
	types.NetConf
	Device        string `json:"device"`
	HWAddr        string `json:"hwaddr"`
	KernelPath    string `json:"kernelpath"`
	PCIBusID      string `json:"pciBusID"`
	RuntimeConfig struct {
		DeviceID string `json:"deviceID,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// MAC is HWAddr parsed.
	MAC net.HardwareAddr `json:"-"`
}

const noPCI = "finding devices by PCI address or sysfs path needs PCI network devices, which this node has none of to test with; select the device by \"device\" or \"hwaddr\""

// Parse decodes and validates stdin. Errors are CNI errors naming the
// field: code 6 for JSON of the wrong type, 7 for a bad value, 2 for the
// PCI and sysfs selectors this node cannot test.
func Parse(stdin []byte) (*Conf, error) { return cniplugin.Validated(Decode(stdin)) }

// Decode reads stdin without ADD's checks: DEL gives back CNI_IFNAME under
// the name its alias keeps and needs only the IPAM type (docs/del.md).
func Decode(stdin []byte) (*Conf, error) {
	c := &Conf{}
	if err := cniplugin.Decode(name, stdin, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate makes ADD's checks and sets MAC.
func (c *Conf) Validate() error {
	switch {
	case c.RuntimeConfig.DeviceID != "":
		return cnierr.Unsupported(name, "runtimeConfig.deviceID", noPCI)
	case c.PCIBusID != "":
		return cnierr.Unsupported(name, "pciBusID", noPCI)
	case c.KernelPath != "":
		return cnierr.Unsupported(name, "kernelpath", noPCI)
	case c.Device == "" && c.HWAddr == "":
		return cnierr.Field(name, "device", "required: name the node's interface to give the pod by \"device\" or \"hwaddr\"")
	}
	if c.Device != "" {
		if err := netlinkx.ValidIfName(c.Device); err != nil {
			return cnierr.Field(name, "device", "%q %v", c.Device, err)
		}
	}
	if c.HWAddr != "" {
		m, err := net.ParseMAC(c.HWAddr)
		if err != nil {
			return cnierr.Field(name, "hwaddr", "%q is not a MAC address", c.HWAddr)
		}
		c.MAC = m
	}
	return nil
}

package hostdevice

import (
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParse: any stdin gives a spec-coded error naming host-device or a
// config that names its device by a valid interface name or a MAC, and no
// PCI or sysfs selector.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"h","type":"host-device","device":"eth1","ipam":{"type":"host-local","ranges":[[{"subnet":"10.23.0.0/16"}]]}}`,
		`{"cniVersion":"1.0.0","name":"h","type":"host-device","hwaddr":"0a:00:00:00:00:01"}`,
		`{"name":"h","type":"host-device","pciBusID":"0000:00:19.0","runtimeConfig":{"deviceID":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("host-device", fuzzcheck.VersionOf(p), `"device":"eth1"`, p))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := Parse(stdin)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if (c.Device == "" && c.MAC == nil) || c.PCIBusID != "" || c.KernelPath != "" || c.RuntimeConfig.DeviceID != "" {
			t.Fatalf("accepted %+v", c)
		}
	})
}

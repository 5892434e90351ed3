package hostdevice

import (
	"fmt"
	"testing"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
)

// TestRootDelWithRefusedConfig (docs/del.md): ADD refuses each config and
// DEL of it succeeds; a device ADD moved into the pod with a good config
// comes back to the node on DEL with a refused one, and its reservation is
// released.
func TestRootDelWithRefusedConfig(t *testing.T) {
	e, _ := lan(t)
	good := e.Conf("1.1.0", "hdd", `"type":"host-device","device":"hd0"`, "", "10.87.0.0/24")
	for i, tc := range []struct{ name, fields, field string }{
		{"no selector", `"type":"host-device"`, `"device"`},
		{"bad hwaddr", `"type":"host-device","hwaddr":"nope"`, `"hwaddr"`},
		{"pciBusID", `"type":"host-device","pciBusID":"0000:00:1f.6"`, `"pciBusID"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := e.Conf("1.1.0", "hdd", tc.fields, "", "10.87.0.0/24")
			e.DelAfterRefused(t, nxtest.Refused{Bad: bad, Field: tc.field}, good, fmt.Sprintf("ctr-%d", i), "net1")
			if nxtest.Link(t, e.Node, "hd0") == nil {
				t.Error("hd0 not back on the node")
			}
			if r := e.Reservations("hdd"); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
		})
	}
}

package tap

import (
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/roottest"
)

// TestRootDelWithRefusedConfig (docs/del.md): ADD refuses each config and
// DEL of it succeeds; a tap ADD made with a good config and DEL'd with a
// refused one is gone from the pod, and its reservation released.
func TestRootDelWithRefusedConfig(t *testing.T) {
	e := nxtest.New(t, Plugin)
	good := e.Conf("1.1.0", "tapd", `"type":"tap"`, "", "10.90.0.0/24")
	for i, tc := range []struct{ name, fields, env, field string }{
		{"mtu too big", `"mtu":70000`, "", `"mtu"`},
		{"selinuxContext", `"selinuxContext":"system_u:object_r:tun_tap_device_t:s0"`, "", `"selinuxContext"`},
		{"bad CNI_ARGS MAC", `"multiQueue":true`, "MAC=zz", "CNI_ARGS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := e.Conf("1.1.0", "tapd", `"type":"tap",`+tc.fields, "", "10.90.0.0/24")
			pod := e.DelAfterRefused(t, nxtest.Refused{Bad: bad, Env: tc.env, Field: tc.field}, good, fmt.Sprintf("ctr-%d", i), "eth0")
			roottest.In(t, pod, func() error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Error("eth0 left in the pod")
				}
				return nil
			})
			if r := e.Reservations("tapd"); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
		})
	}
}

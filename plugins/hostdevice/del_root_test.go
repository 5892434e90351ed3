package hostdevice

import (
	"fmt"
	"strings"
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
			pod := e.Pod()
			a := e.Args(bad, fmt.Sprintf("refused-%d", i), pod, "net1")
			if _, err := e.Add(a); err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("ADD: %v, want an error naming %s", err, tc.field)
			}
			if err := e.Del(a); err != nil {
				t.Fatalf("DEL after the refused ADD: %v", err)
			}

			pod = e.Pod()
			id := fmt.Sprintf("ctr-%d", i)
			e.MustAdd(e.Args(good, id, pod, "net1"))
			a = e.Args(bad, id, pod, "net1")
			for n := 1; n <= 2; n++ {
				if err := e.Del(a); err != nil {
					t.Fatalf("DEL #%d with the refused config: %v", n, err)
				}
			}
			if nxtest.Link(t, e.Node, "hd0") == nil {
				t.Error("hd0 not back on the node")
			}
			if r := e.Reservations("hdd"); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
		})
	}
}

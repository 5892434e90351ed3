package tap

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDelDecodes: what ADD refuses, DEL and GC decode (docs/del.md): DEL
// deletes CNI_IFNAME in the pod and releases IPAM's reservation.
func TestDelDecodes(t *testing.T) {
	const ipam = `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.25.0.0/24"}]]}`
	for _, tc := range []struct {
		name, fields, env, field string
		code                     uint
	}{
		{"mtu too big", `"mtu":70000,` + ipam, "", `"mtu"`, 7},
		{"owner -1", `"owner":4294967295,` + ipam, "", `"owner"`, 7},
		{"selinuxContext", `"selinuxContext":"system_u:object_r:tun_tap_device_t:s0",` + ipam, "", `"selinuxContext"`, 2},
		{"bad mac", `"mac":"nope",` + ipam, "", `"mac"`, 7},
		{"bad CNI_ARGS MAC", ipam, "MAC=zz", "CNI_ARGS", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := []byte(`{"cniVersion":"1.0.0","name":"t","type":"tap",` + tc.fields + `}`)
			_, err := Parse(stdin, tc.env)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("Parse: %v, want code %d naming %s", err, tc.code, tc.field)
			}
			c, err := Decode(stdin, tc.env)
			if err != nil || c.IPAM.Type != "host-local" {
				t.Fatalf("Decode: %+v %v", c, err)
			}
		})
	}
	c, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"t","type":"tap","mtu":-1}`), "")
	if err != nil || c.MTU != 0 {
		t.Fatalf("negative mtu (the kernel's default, as in the reference): %+v %v", c, err)
	}
}

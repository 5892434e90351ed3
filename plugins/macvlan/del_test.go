package macvlan

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDelDecodes: what ADD refuses, DEL and GC decode (docs/del.md): DEL
// deletes CNI_IFNAME in the pod and releases IPAM's reservation, and needs
// nothing but the IPAM type.
func TestDelDecodes(t *testing.T) {
	const ipam = `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.24.0.0/24"}]]}`
	for _, tc := range []struct {
		name, fields, env, field string
		code                     uint
	}{
		{"bogus mode", `"mode":"bogus",` + ipam, "", `"mode"`, 7},
		{"master name too long", `"master":"abcdefghijklmnop",` + ipam, "", `"master"`, 7},
		{"mtu too big", `"mtu":70000,` + ipam, "", `"mtu"`, 7},
		{"negative mtu", `"mtu":-1,` + ipam, "", `"mtu"`, 7},
		{"bad mac", `"mac":"nope",` + ipam, "", `"mac"`, 7},
		{"bad CNI_ARGS MAC", ipam, "MAC=zz", "CNI_ARGS", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := []byte(`{"cniVersion":"1.0.0","name":"m","type":"macvlan",` + tc.fields + `}`)
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
}

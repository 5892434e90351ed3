package hostdevice

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDelDecodes: what ADD refuses, DEL and GC decode (docs/del.md): DEL
// gives CNI_IFNAME back under the name its alias keeps and releases IPAM's
// reservation; it needs no selector.
func TestDelDecodes(t *testing.T) {
	const ipam = `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.26.0.0/24"}]]}`
	for _, tc := range []struct {
		name, fields, field string
		code                uint
	}{
		{"no selector", ipam, `"device"`, 7},
		{"device name too long", `"device":"abcdefghijklmnop",` + ipam, `"device"`, 7},
		{"bad hwaddr", `"hwaddr":"nope",` + ipam, `"hwaddr"`, 7},
		{"pciBusID", `"pciBusID":"0000:00:1f.6",` + ipam, `"pciBusID"`, 2},
		{"kernelpath", `"kernelpath":"/sys/devices/x",` + ipam, `"kernelpath"`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := []byte(`{"cniVersion":"1.0.0","name":"h","type":"host-device",` + tc.fields + `}`)
			_, err := Parse(stdin)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("Parse: %v, want code %d naming %s", err, tc.code, tc.field)
			}
			c, err := Decode(stdin)
			if err != nil || c.IPAM.Type != "host-local" {
				t.Fatalf("Decode: %+v %v", c, err)
			}
		})
	}
}

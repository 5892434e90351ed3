package ptp

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDelDecodes: what ADD refuses, DEL and GC decode (docs/del.md); DEL
// then removes the attachment's veth and rules and releases IPAM's
// reservation when there is an IPAM type.
func TestDelDecodes(t *testing.T) {
	const ipam = `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.23.0.0/24"}]]}`
	for _, tc := range []struct{ name, fields, field string }{
		{"mtu too big", `"mtu":70000,` + ipam, `"mtu"`},
		{"mtu too small", `"mtu":50,` + ipam, `"mtu"`},
		{"bogus ipMasqBackend", `"ipMasq":true,"ipMasqBackend":"ipfw",` + ipam, `"ipMasqBackend"`},
		{"no ipam", `"ipMasq":true`, `"ipam"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := []byte(`{"cniVersion":"1.0.0","name":"p","type":"ptp",` + tc.fields + `}`)
			_, err := Parse(stdin)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != 7 || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("Parse: %v, want code 7 naming %s", err, tc.field)
			}
			c, err := Decode(stdin)
			if err != nil || c.Name != "p" {
				t.Fatalf("Decode: %+v %v", c, err)
			}
		})
	}
	c, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"p","type":"ptp","mtu":-1,` + ipam + `}`))
	if err != nil || c.MTU != 0 {
		t.Fatalf("negative mtu (the kernel's default, as in the reference): %+v %v", c, err)
	}
}

package bridge

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

const delIPAM = `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.22.0.0/24"}]]}`

// delCases are configs ADD refuses and DEL must still clean up with
// (docs/del.md): each names the field ADD's error names and its code.
var delCases = []struct {
	name, fields, env, field string
	code                     uint
}{
	{"mtu too big", `"mtu":70000`, "", `"mtu"`, 7},
	{"mtu too small", `"mtu":50`, "", `"mtu"`, 7},
	{"bridge name too long", `"bridge":"abcdefghijklmnop"`, "", `"bridge"`, 7},
	{"hairpin and promisc", `"hairpinMode":true,"promiscMode":true`, "", `"hairpinMode"`, 7},
	{"disableContainerInterface with ipam", `"disableContainerInterface":true`, "", `"disableContainerInterface"`, 7},
	{"vlan", `"vlan":5`, "", `"vlan"`, 2},
	{"vlan out of range", `"vlan":5000`, "", `"vlan"`, 7},
	{"vlanTrunk", `"vlanTrunk":[{"id":5}]`, "", `"vlanTrunk"`, 2},
	{"bogus ipMasqBackend", `"ipMasqBackend":"ipfw"`, "", `"ipMasqBackend"`, 7},
	{"bad CNI_ARGS MAC", `"ipMasq":true`, "IgnoreUnknown=1;MAC=zz:zz", "CNI_ARGS", 4},
	{"multicast runtimeConfig.mac", `"runtimeConfig":{"mac":"01:00:5e:00:00:01"}`, "", `"runtimeConfig.mac"`, 7},
}

func delConf(fields string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"b","type":"bridge","bridge":"dtbr0",` + fields + `}`)
}

// TestDelDecodes: Parse (ADD, CHECK, STATUS) refuses each config with a
// coded error naming the field; Decode (DEL, GC) accepts it and keeps what
// DEL needs.
func TestDelDecodes(t *testing.T) {
	for _, tc := range delCases {
		t.Run(tc.name, func(t *testing.T) {
			stdin := delConf(tc.fields + "," + delIPAM)
			_, err := Parse(stdin, tc.env)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("Parse: %v, want code %d naming %s", err, tc.code, tc.field)
			}
			c, err := Decode(stdin, tc.env)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if c.Name != "b" || c.IPAM.Type != "host-local" {
				t.Fatalf("Decode lost what DEL needs: %+v", c)
			}
		})
	}
	// JSON of the wrong type still stops DEL: nothing can be trusted.
	if _, err := Decode(delConf(`"mtu":"big"`), ""); err == nil {
		t.Fatal("Decode accepted a string mtu")
	}
}

// TestNegativeMTU: as in the reference v1.9.1, a negative mtu means the
// kernel's default (docs/plugins/bridge.md).
func TestNegativeMTU(t *testing.T) {
	c, err := Parse(delConf(`"mtu":-1,`+delIPAM), "")
	if err != nil || c.MTU != 0 {
		t.Fatalf("%+v %v", c, err)
	}
}

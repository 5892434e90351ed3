package macvlan

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","master":"eth1","ipam":{"type":"host-local"}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Master != "eth1" || c.LinkMode != netlink.MACVLAN_MODE_BRIDGE || c.MAC != nil || !c.L3() {
		t.Errorf("defaults: %+v", c)
	}
	for mode, want := range map[string]netlink.MacvlanMode{"private": netlink.MACVLAN_MODE_PRIVATE, "vepa": netlink.MACVLAN_MODE_VEPA, "passthru": netlink.MACVLAN_MODE_PASSTHRU, "bridge": netlink.MACVLAN_MODE_BRIDGE} {
		c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","mode":"`+mode+`"}`), "")
		if err != nil || c.LinkMode != want || ModeName(c.LinkMode) != mode {
			t.Errorf("mode %s: %v %v", mode, c, err)
		}
	}
	if c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","ipam":{}}`), ""); err != nil || c.L3() {
		t.Errorf("empty ipam must be L2 only: %v %v", c, err)
	}
}

// TestParseMAC checks the reference's precedence: the mac field, then
// CNI_ARGS MAC=, then runtimeConfig.mac.
func TestParseMAC(t *testing.T) {
	conf := func(fields string) []byte {
		return []byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan"` + fields + `}`)
	}
	for _, tc := range []struct {
		fields, env, want string
	}{
		{`,"mac":"0a:00:00:00:00:01"`, "", "0a:00:00:00:00:01"},
		{`,"mac":"0a:00:00:00:00:01"`, "K8S_POD_NAME=x;MAC=0a:00:00:00:00:02", "0a:00:00:00:00:02"},
		{`,"mac":"0a:00:00:00:00:01","runtimeConfig":{"mac":"0a:00:00:00:00:03"}`, "MAC=0a:00:00:00:00:02", "0a:00:00:00:00:03"},
	} {
		c, err := Parse(conf(tc.fields), tc.env)
		if err != nil || c.MAC.String() != tc.want {
			t.Errorf("%s %s: %v %v, want %s", tc.fields, tc.env, c.MAC, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		fields, env string
		code        uint
		want        string
	}{
		{`,"mode":"source"`, "", 7, `"mode"`},
		{`,"mtu":-1`, "", 7, `"mtu"`},
		{`,"mtu":40`, "", 7, `"mtu"`},
		{`,"mtu":70000`, "", 7, `"mtu"`},
		{`,"master":"../etc"`, "", 7, `"master"`},
		{`,"master":"a-very-long-interface-name"`, "", 7, `"master"`},
		{`,"mac":"01:00:5e:00:00:01"`, "", 7, `"mac"`},
		{`,"runtimeConfig":{"mac":"zz"}`, "", 7, `"runtimeConfig.mac"`},
		{``, "MAC=nope", 4, "CNI_ARGS"},
		{`,"mtu":"1500"`, "", 6, "mtu"},
		{`,"linkInContainer":"yes"`, "", 6, "linkInContainer"},
	} {
		_, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan"`+tc.fields+`}`), tc.env)
		te, ok := err.(*types.Error)
		if !ok || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) || !strings.HasPrefix(te.Msg, "macvlan: ") {
			b, _ := json.Marshal(err)
			t.Errorf("%s %s: %s, want code %d naming %s", tc.fields, tc.env, b, tc.code, tc.want)
		}
	}
}

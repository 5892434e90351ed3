package bridge

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cnierr"
)

func TestParseAllFields(t *testing.T) {
	c, err := Parse([]byte(`{
		"cniVersion": "1.1.0", "name": "n", "type": "bridge",
		"bridge": "br7", "isGateway": false, "isDefaultGateway": true, "forceAddress": true,
		"ipMasq": true, "ipMasqBackend": "iptables", "mtu": 1400, "hairpinMode": true,
		"promiscMode": false, "vlan": 0, "preserveDefaultVlan": true, "macspoofchk": true,
		"enabledad": true, "portIsolation": true,
		"args": {"cni": {"mac": "02:00:00:00:00:01"}},
		"runtimeConfig": {"mac": "02:00:00:00:00:02"},
		"ipam": {"type": "host-local"}
	}`), "IgnoreUnknown=1;MAC=02:00:00:00:00:03;K8S_POD_NAME=x")
	if err != nil {
		t.Fatal(err)
	}
	if c.BrName != "br7" || !c.IsGW || !c.IsDefaultGW || !c.ForceAddress || !c.IPMasq || c.MTU != 1400 ||
		!c.HairpinMode || !c.MacSpoofChk || !c.EnableDad || !c.PortIsolation || !c.L3() || !c.PreserveDefaultVlan {
		t.Errorf("fields not decoded: %+v", c)
	}
	if c.MAC.String() != "02:00:00:00:00:02" {
		t.Errorf("runtimeConfig.mac must win, got %s", c.MAC)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.BrName != "cni0" || c.L3() || c.MAC != nil || c.IsGW {
		t.Errorf("defaults: %+v", c)
	}
	c, err = Parse([]byte(`{"name":"n","type":"bridge","args":{"cni":{"mac":"02:00:00:00:00:01"}}}`), "MAC=02:00:00:00:00:09")
	if err != nil || c.MAC.String() != "02:00:00:00:00:01" {
		t.Errorf("args.cni.mac must override CNI_ARGS: %v %v", c.MAC, err)
	}
	c, err = Parse([]byte(`{"name":"n","type":"bridge"}`), "MAC=02:00:00:00:00:09")
	if err != nil || c.MAC.String() != "02:00:00:00:00:09" {
		t.Errorf("CNI_ARGS MAC: %v %v", c.MAC, err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		conf, env string
		code      uint
		msg       string
	}{
		{`{"mtu": 70000}`, "", cnierr.InvalidConfig, `field "mtu": 70000 is above the maximum 65535`},
		{`{"mtu": 20}`, "", cnierr.InvalidConfig, `field "mtu": 20 is below the minimum 68`},
		{`{"mtu": "1500"}`, "", cnierr.DecodingFailure, `field "mtu": expected an integer`},
		{`{"vlan": 5}`, "", cnierr.UnsupportedField, `field "vlan" is not supported`},
		{`{"vlan": 5000}`, "", cnierr.InvalidConfig, `field "vlan": 5000 is outside 0-4094`},
		{`{"vlanTrunk": [{"id": 5}]}`, "", cnierr.UnsupportedField, `field "vlanTrunk" is not supported`},
		{`{"bridge": "this-name-is-too-long"}`, "", cnierr.InvalidConfig, `field "bridge": "this-name-is-too-long" is longer than 15 bytes`},
		{`{"bridge": "a/b"}`, "", cnierr.InvalidConfig, `field "bridge"`},
		{`{"ipMasqBackend": "pf"}`, "", cnierr.InvalidConfig, `field "ipMasqBackend": "pf"`},
		{`{"hairpinMode": true, "promiscMode": true}`, "", cnierr.InvalidConfig, `field "hairpinMode": cannot be set together with promiscMode`},
		{`{"disableContainerInterface": true, "ipam": {"type": "host-local"}}`, "", cnierr.InvalidConfig, `field "disableContainerInterface"`},
		{`{"runtimeConfig": {"mac": "zz"}}`, "", cnierr.InvalidConfig, `field "runtimeConfig.mac": "zz": not a MAC address`},
		{`{"args": {"cni": {"mac": "01:00:00:00:00:01"}}}`, "", cnierr.InvalidConfig, `field "args.cni.mac": "01:00:00:00:00:01": is a multicast address`},
		{`{}`, "MAC=nope", cnierr.InvalidEnv, `CNI_ARGS: MAC=nope`},
		{`{"isGateway": "yes"}`, "", cnierr.DecodingFailure, `field "isGateway": expected true or false`},
		{`{`, "", cnierr.DecodingFailure, `not valid JSON`},
	}
	for _, tc := range cases {
		conf := strings.Replace(tc.conf, "{", `{"cniVersion":"1.1.0","name":"n","type":"bridge",`, 1)
		if tc.conf == "{}" {
			conf = `{"cniVersion":"1.1.0","name":"n","type":"bridge"}`
		}
		if tc.conf == "{" {
			conf = "{"
		}
		_, err := Parse([]byte(conf), tc.env)
		var te *types.Error
		if !errors.As(err, &te) {
			t.Errorf("%s: error %v is not a CNI error", tc.conf, err)
			continue
		}
		if te.Code != tc.code || !strings.Contains(te.Msg, tc.msg) || !strings.HasPrefix(te.Msg, "bridge: ") {
			t.Errorf("%s: got code %d %q, want code %d containing %q", tc.conf, te.Code, te.Msg, tc.code, tc.msg)
		}
	}
}

func ipc(cidr, gw string) *current.IPConfig {
	ip, n, _ := net.ParseCIDR(cidr)
	n.IP = ip
	return &current.IPConfig{Address: *n, Gateway: net.ParseIP(gw)}
}

func TestPlan(t *testing.T) {
	c := &Conf{IsGW: true, IsDefaultGW: true}
	res := &current.Result{IPs: []*current.IPConfig{ipc("10.1.0.5/24", ""), ipc("fd00::5/64", "fd00::1")}}
	gws, err := Plan(c, res)
	if err != nil {
		t.Fatal(err)
	}
	if len(gws) != 2 || gws[0].String() != "10.1.0.1/24" || gws[1].String() != "fd00::1/64" {
		t.Errorf("bridge addresses %v", gws)
	}
	if len(res.Routes) != 2 || res.Routes[0].Dst.String() != "0.0.0.0/0" || !res.Routes[0].GW.Equal(net.ParseIP("10.1.0.1")) || res.Routes[1].Dst.String() != "::/0" {
		t.Errorf("routes %v", res.Routes)
	}
	for _, i := range res.IPs {
		if *i.Interface != 2 {
			t.Errorf("interface index %d", *i.Interface)
		}
	}
	// An IPAM default route is kept, not doubled.
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	res = &current.Result{IPs: []*current.IPConfig{ipc("10.1.0.5/24", "10.1.0.254")}, Routes: []*types.Route{{Dst: *def}}}
	if _, err := Plan(c, res); err != nil || len(res.Routes) != 1 {
		t.Errorf("routes %v err %v", res.Routes, err)
	}
	// Without isGateway nothing goes on the bridge and no gateway is made up.
	res = &current.Result{IPs: []*current.IPConfig{ipc("10.1.0.5/24", "")}}
	if gws, err := Plan(&Conf{}, res); err != nil || len(gws) != 0 || res.IPs[0].Gateway != nil {
		t.Errorf("L2 plan: %v %v %v", gws, res.IPs[0].Gateway, err)
	}
	res = &current.Result{IPs: []*current.IPConfig{ipc("10.1.0.1/24", "")}}
	if _, err := Plan(c, res); err == nil {
		t.Error("pod address equal to the gateway accepted")
	}
}

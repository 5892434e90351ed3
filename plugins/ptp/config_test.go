package ptp

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cnierr"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"ptp","ipMasq":true,"ipMasqBackend":"nftables","mtu":1400,
		"dns":{"nameservers":["10.0.0.10"]},"ipam":{"type":"host-local"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.IPMasq || c.MTU != 1400 || c.IPAM.Type != "host-local" || len(c.DNS.Nameservers) != 1 {
		t.Errorf("%+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		conf string
		code uint
		msg  string
	}{
		{`{"name":"n"}`, cnierr.InvalidConfig, `ptp: field "ipam": required`},
		{`{"name":"n","ipam":{"type":"host-local"},"mtu":65536}`, cnierr.InvalidConfig, `ptp: field "mtu": 65536 is above the maximum 65535`},
		{`{"name":"n","ipam":{"type":"host-local"},"mtu":10}`, cnierr.InvalidConfig, `ptp: field "mtu": 10 is below the minimum 68`},
		{`{"name":"n","ipam":{"type":"host-local"},"ipMasq":1}`, cnierr.DecodingFailure, `ptp: field "ipMasq": expected true or false`},
		{`{"name":"n","ipam":{"type":"host-local"},"ipMasqBackend":"x"}`, cnierr.InvalidConfig, `ptp: field "ipMasqBackend"`},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.conf))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.msg) {
			t.Errorf("%s: got %v, want code %d %q", tc.conf, err, tc.code, tc.msg)
		}
	}
}

func TestPlanAndRoutes(t *testing.T) {
	ip, n, _ := net.ParseCIDR("10.1.0.5/24")
	n.IP = ip
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	_, other, _ := net.ParseCIDR("192.0.2.0/24")
	res := &current.Result{IPs: []*current.IPConfig{{Address: *n}}, Routes: []*types.Route{
		{Dst: *def}, {Dst: *other, GW: net.ParseIP("10.1.0.9")}}}
	if err := Plan(res); err != nil {
		t.Fatal(err)
	}
	if res.IPs[0].Gateway.String() != "10.1.0.1" || *res.IPs[0].Interface != 1 {
		t.Errorf("plan: %+v", res.IPs[0])
	}
	rs := PodRoutes(res)
	var got []string
	for _, r := range rs {
		s := r.Dst.String()
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			s += " onlink"
		}
		got = append(got, s)
	}
	want := "10.1.0.1/32,10.1.0.0/24 via 10.1.0.1,0.0.0.0/0 via 10.1.0.1,192.0.2.0/24 via 10.1.0.9 onlink"
	if strings.Join(got, ",") != want {
		t.Errorf("routes %q, want %q", strings.Join(got, ","), want)
	}
	if err := Plan(&current.Result{}); err == nil {
		t.Error("empty IPAM result accepted")
	}
}

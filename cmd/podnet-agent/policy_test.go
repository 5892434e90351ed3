package main

import (
	"net/netip"
	"testing"

	"github.com/podnet/podnet/agent/policykernel"
)

func TestDropString(t *testing.T) {
	a := netip.MustParseAddr
	pods := map[netip.Addr]string{a("10.0.0.1"): "x/a", a("10.0.0.2"): "y/b", a("fd00::1"): "x/a"}
	for _, tc := range []struct {
		d    policykernel.LoggedDrop
		want string
	}{
		{policykernel.LoggedDrop{Chain: "ingress-0123456789ab", Src: a("10.0.0.2"), Dst: a("10.0.0.1"), Proto: 6, Port: 80},
			"deny ingress x/a: tcp 10.0.0.2 -> 10.0.0.1:80"},
		{policykernel.LoggedDrop{Chain: "egress-0123456789ab", Src: a("10.0.0.2"), Dst: a("10.0.0.1"), Proto: 17, Port: 53},
			"deny egress y/b: udp 10.0.0.2 -> 10.0.0.1:53"},
		{policykernel.LoggedDrop{Chain: "egress-0123456789ab", Src: a("10.0.0.9"), Dst: a("10.0.0.1"), Proto: 1},
			"deny egress pod 10.0.0.9: 1 10.0.0.9 -> 10.0.0.1"},
		{policykernel.LoggedDrop{Chain: "ingress-0123456789ab", Src: a("fd00::2"), Dst: a("fd00::1"), Proto: 132, Port: 9},
			"deny ingress x/a: sctp fd00::2 -> [fd00::1]:9"},
	} {
		if got := dropString(tc.d, pods); got != tc.want {
			t.Errorf("%+v:\n got %s\nwant %s", tc.d, got, tc.want)
		}
	}
}

package ptp

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/nft"
)

// TestRootDelWithRefusedConfig (docs/del.md): ADD refuses each config and
// DEL of it succeeds; an attachment ADD made with a good config and DEL'd
// with a refused one loses its veth pair, masquerade rule and reservation.
func TestRootDelWithRefusedConfig(t *testing.T) {
	e := nxtest.New(t, Plugin)
	good := conf(e, "1.0.0", "ptpd", "10.37.0.0/24", "", `"ipMasq":true`)
	for i, tc := range []struct{ name, fields, field string }{
		{"mtu too big", `"mtu":70000`, `"mtu"`},
		{"mtu too small", `"mtu":50`, `"mtu"`},
		{"bogus ipMasqBackend", `"ipMasqBackend":"ipfw"`, `"ipMasqBackend"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := conf(e, "1.0.0", "ptpd", "10.37.0.0/24", "", `"ipMasq":true,`+tc.fields)
			pod := e.DelAfterRefused(t, nxtest.Refused{Bad: bad, Field: tc.field}, good, fmt.Sprintf("ctr-%d", i), "eth0")
			if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
				t.Errorf("host veths left: %v", v)
			}
			e.In(pod, func() error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Error("eth0 left in the pod")
				}
				return nil
			})
			if r := e.Reservations("ptpd"); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
			e.In(e.Node, func() error {
				if rules, err := nft.List(MasqChain); err != nil || len(rules) != 0 {
					t.Errorf("masquerade rules left: %d %v", len(rules), err)
				}
				return nil
			})
		})
	}
	// Without ipam ADD is refused; DEL has no reservation to release.
	bad := []byte(`{"cniVersion":"1.0.0","name":"ptpd","type":"ptp","ipMasq":true}`)
	a := e.Args(bad, "noipam", e.Pod(), "eth0")
	if _, err := e.Add(a); err == nil || !strings.Contains(err.Error(), `"ipam"`) {
		t.Fatalf("ADD without ipam: %v", err)
	}
	if err := e.Del(a); err != nil {
		t.Fatalf("DEL without ipam: %v", err)
	}
}

// TestRootGatewayOutsideSubnet: host-local accepts a gateway outside the
// subnet, as the reference v1.9.1 does, and ptp reaches it on-link: the
// setup routed CNIs use (docs/ipam-host-local.md).
func TestRootGatewayOutsideSubnet(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := e.Conf("1.0.0", "ptpg", `"type":"ptp"`, "", "")
	c = []byte(strings.Replace(string(c), `"ranges":[]`, `"ranges":[[{"subnet":"10.38.0.0/24","gateway":"169.254.1.1"}]],"routes":[{"dst":"0.0.0.0/0"}]`, 1))
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr-g", pod, "eth0"))
	if len(r.IPs) != 1 || r.IPs[0].Gateway.String() != "169.254.1.1" {
		t.Fatalf("ips %+v", r.IPs)
	}
	if err := nxtest.Ping(pod, r.IPs[0].Gateway); err != nil {
		t.Errorf("ping the gateway: %v", err)
	}
	if err := e.Del(e.Args(c, "ctr-g", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
}

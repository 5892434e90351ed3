package bridge

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
)

// TestRootDelWithRefusedConfig is issue 18's DEL rule (docs/del.md) for
// every config of delCases:
//   - the runtime's cleanup after a refused ADD: ADD fails with the field's
//     code and leaves nothing, and DEL of the same config succeeds (the
//     issue's repro is the first case: mtu 70000);
//   - an attachment ADD made with a good config, DEL'd with the bad one:
//     the pod's veth pair, the nftables rules and the IPAM reservation are
//     gone, and a second DEL succeeds too.
func TestRootDelWithRefusedConfig(t *testing.T) {
	e := nxtest.New(t, Plugin)
	base := `"isGateway":true,"ipMasq":true,"macspoofchk":true`
	good := conf(e, "1.0.0", "netd", "10.17.0.0/24", "", base)
	for i, tc := range delCases {
		t.Run(tc.name, func(t *testing.T) {
			bad := conf(e, "1.0.0", "netd", "10.17.0.0/24", "", base+","+tc.fields)

			// Refused ADD, then the runtime's DEL.
			pod := e.Pod()
			a := e.Args(bad, fmt.Sprintf("refused-%d", i), pod, "eth0")
			a.Args = tc.env
			_, err := e.Add(a)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("ADD: %v, want code %d naming %s", err, tc.code, tc.field)
			}
			if err := e.Del(a); err != nil {
				t.Fatalf("DEL after the refused ADD: %v", err)
			}

			// Good ADD, DEL with the bad config.
			pod = e.Pod()
			id := fmt.Sprintf("ctr-%d", i)
			e.MustAdd(e.Args(good, id, pod, "eth0"))
			if r := e.Reservations("netd"); len(r) != 1 {
				t.Fatalf("reservations after ADD: %v", r)
			}
			a = e.Args(bad, id, pod, "eth0")
			a.Args = tc.env
			for n := 1; n <= 2; n++ {
				if err := e.Del(a); err != nil {
					t.Fatalf("DEL #%d with the refused config: %v", n, err)
				}
			}
			if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
				t.Errorf("host veths left: %v", v)
			}
			e.In(pod, func() error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Error("eth0 left in the pod")
				}
				return nil
			})
			if r := e.Reservations("netd"); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
			e.In(e.Node, func() error {
				assertRules(t, MasqChain, 0)
				assertRules(t, SpoofChain, 0)
				return nil
			})
		})
	}
}

// TestRootDelWithRefusedStaticAddress: a bridge with static IPAM whose
// address lacks its prefix is refused by ADD (static names the field) and
// DEL'd cleanly, before and after an attachment with a good address.
func TestRootDelWithRefusedStaticAddress(t *testing.T) {
	e := nxtest.New(t, Plugin)
	static := func(addr string) []byte {
		return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"nets","type":"bridge","bridge":"br0",
			"ipam":{"type":"static","addresses":[{"address":%q}]}}`, addr))
	}
	pod := e.Pod()
	a := e.Args(static("10.18.0.5"), "ctr-s", pod, "eth0")
	if _, err := e.Add(a); err == nil || !strings.Contains(err.Error(), "addresses[0].address") {
		t.Fatalf("ADD: %v", err)
	}
	if err := e.Del(a); err != nil {
		t.Fatalf("DEL after the refused ADD: %v", err)
	}
	e.MustAdd(e.Args(static("10.18.0.5/24"), "ctr-s", pod, "eth0"))
	if err := e.Del(a); err != nil {
		t.Fatalf("DEL with the refused config: %v", err)
	}
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		t.Errorf("host veths left: %v", v)
	}
}

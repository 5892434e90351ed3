package hostdevice

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

// lan gives the node an interface hd0 wired to a host "outside"
// (10.87.0.1): the device a pod is given.
func lan(t *testing.T) (*nxtest.Env, string) {
	e := nxtest.New(t, Plugin)
	_, out := roottest.NewNS(t, "outside")
	nxtest.Wire(t, e.Node, "hd0", nil, out, "eth0", []string{"10.87.0.1/24"})
	return e, out
}

func TestRootHostDevice(t *testing.T) {
	e, out := lan(t)
	mac := nxtest.Link(t, e.Node, "hd0").Attrs().HardwareAddr
	c := e.Conf("1.1.0", "hd1", `"type":"host-device","device":"hd0"`, "", "10.87.0.0/24")
	pod := e.Pod()
	args := e.Args(c, "ctr-a", pod, "net1")
	r := e.MustAdd(args)
	if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "net1" || r.Interfaces[0].Mac != mac.String() || r.Interfaces[0].Sandbox != pod || len(r.IPs) != 1 {
		t.Fatalf("result: %+v", r)
	}
	if nxtest.Link(t, e.Node, "hd0") != nil {
		t.Fatal("hd0 still on the node")
	}
	if l := nxtest.Link(t, pod, "net1"); l == nil || l.Attrs().Alias != "hd0" {
		t.Fatalf("net1 in the pod: %+v", l)
	}
	if err := nxtest.Ping(pod, net.ParseIP("10.87.0.1")); err != nil {
		t.Errorf("pod -> outside through the moved device: %v", err)
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "net1")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := e.Del(args); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	back := nxtest.Link(t, e.Node, "hd0")
	if back == nil || back.Attrs().HardwareAddr.String() != mac.String() {
		t.Fatalf("hd0 not back on the node: %+v", back)
	}
	if nxtest.Link(t, pod, "net1") != nil {
		t.Error("net1 left in the pod")
	}
	if got := e.Reservations("hd1"); len(got) != 0 {
		t.Errorf("reservations after DEL: %v", got)
	}

	// By MAC, into a pod that already has an interface of the device's
	// name (the temporary name keeps the move from colliding).
	pod2 := e.Pod()
	nxtest.Wire(t, pod2, "hd0", nil, out, "eth1", nil)
	c2 := e.Conf("1.1.0", "hd1", `"type":"host-device","hwaddr":"`+strings.ToUpper(mac.String())+`"`, "", "10.87.0.0/24")
	r2 := e.MustAdd(e.Args(c2, "ctr-b", pod2, "eth0"))
	if err := nxtest.Ping(out, r2.IPs[0].Address.IP); err != nil {
		t.Errorf("outside -> pod by hwaddr: %v", err)
	}
	if err := e.Del(e.Args(c2, "ctr-b", pod2, "eth0")); err != nil {
		t.Fatal(err)
	}
	if nxtest.Link(t, e.Node, "hd0") == nil || nxtest.Link(t, pod2, "hd0") == nil {
		t.Error("after DEL: hd0 must be back on the node and the pod's own hd0 untouched")
	}
}

// TestRootHostDeviceFailedAdd: a missing device names the field; a taken
// CNI_IFNAME is code 4 and gives the device back under its name.
func TestRootHostDeviceFailedAdd(t *testing.T) {
	e, _ := lan(t)
	pod := e.Pod()
	for _, tc := range []struct {
		fields, want string
	}{
		{`"type":"host-device","device":"nope0"`, `"device": "nope0": no such interface on the node`},
		{`"type":"host-device","hwaddr":"0a:00:00:00:00:99"`, `"hwaddr": no interface on the node has MAC`},
		{`"type":"host-device","device":"lo"`, `is the node's loopback`},
	} {
		_, err := e.Add(e.Args(e.Conf("1.1.0", "hd2", tc.fields, "", "10.86.0.0/24"), "ctr-x", pod, "eth0"))
		if te, ok := err.(*types.Error); !ok || te.Code != 7 || !strings.Contains(te.Msg, tc.want) {
			t.Errorf("%s: %v", tc.fields, err)
		}
	}
	nxtest.Wire(t, pod, "eth0", nil, e.Pod(), "x", nil) // CNI_IFNAME taken
	_, err := e.Add(e.Args(e.Conf("1.1.0", "hd2", `"type":"host-device","device":"hd0"`, "", "10.86.0.0/24"), "ctr-y", pod, "eth0"))
	if te, ok := err.(*types.Error); !ok || te.Code != 4 {
		t.Errorf("taken CNI_IFNAME: %v", err)
	}
	if nxtest.Link(t, e.Node, "hd0") == nil {
		t.Error("hd0 not given back after the failed ADD")
	}
	if got := e.Reservations("hd2"); len(got) != 0 {
		t.Errorf("reservations after failed ADDs: %v", got)
	}
	// DEL with the pod's namespace gone is fine (the kernel returns a
	// physical device to the host itself; this veth dies with it).
	if err := netns.DeletePath(pod); err != nil {
		t.Fatal(err)
	}
	if err := e.Del(e.Args(e.Conf("1.1.0", "hd2", `"type":"host-device","device":"hd0"`, "", "10.86.0.0/24"), "ctr-y", pod, "eth0")); err != nil {
		t.Errorf("DEL with netns gone: %v", err)
	}
}

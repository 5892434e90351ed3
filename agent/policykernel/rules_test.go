package policykernel

import (
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestShape(t *testing.T) {
	attrs := func(as ...netlink.Attribute) []byte {
		ae := netlink.NewAttributeEncoder()
		for _, a := range as {
			ae.Bytes(a.Type, a.Data)
		}
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	chain := func(name, prefix string, packets byte) []rawRule {
		return []rawRule{
			{exprs: []rawExpr{{"meta", []byte{1, 2}}, {"lookup", []byte("in-a4")}}},
			{exprs: []rawExpr{{"log", attrs(netlink.Attribute{Type: unix.NFTA_LOG_GROUP, Data: []byte{0, 17}},
				netlink.Attribute{Type: unix.NFTA_LOG_PREFIX, Data: []byte(prefix + "\x00")})}}},
			{exprs: []rawExpr{{"counter", attrs(netlink.Attribute{Type: unix.NFTA_COUNTER_PACKETS, Data: []byte{0, 0, 0, 0, 0, 0, 0, packets}})}, {"immediate", []byte{9}}}},
		}
	}
	a, okA := shape("in-a", chain("in-a", "in-a", 1))
	b, okB := shape("in-b", chain("in-b", "in-b", 7))
	if !okA || !okB || a != b {
		t.Errorf("same rules up to prefix and counter: %q %t, %q %t", a, okA, b, okB)
	}
	if _, ok := shape("in-b", chain("in-b", "in-a", 7)); ok {
		t.Error("a log prefix that is not the chain's name passed")
	}
	if e, _ := shape("eg-b", chain("eg-b", "eg-b", 7)); e == a {
		t.Error("an egress chain has the shape of an ingress one")
	}
	other := chain("in-c", "in-c", 0)
	other[0].exprs[1].data = []byte("in-a6")
	if c, _ := shape("in-c", other); c == a {
		t.Error("another set looked up, same shape")
	}
	if p, ok := droppedBy(chain("in-a", "in-a", 42)); !ok || p != 42 {
		t.Errorf("droppedBy: %d, %t", p, ok)
	}
}

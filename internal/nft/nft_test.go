package nft

import (
	"net"
	"strings"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/podnet/podnet/internal/roottest"
)

func TestTag(t *testing.T) {
	a := Tag("net1", "cid", "eth0")
	if !strings.HasPrefix(a, NetworkPrefix("net1")) || !strings.HasSuffix(a, "eth0:cid") {
		t.Errorf("tag %q", a)
	}
	if Tag("net2", "cid", "eth0") == a || Tag("net1", "cid", "eth1") == a {
		t.Error("tags collide")
	}
	long := Tag("n", strings.Repeat("x", 400), "eth0")
	if len(long) > maxTag || !strings.HasPrefix(long, NetworkPrefix("n")) {
		t.Errorf("long tag %q", long)
	}
}

func TestMasqRulesShape(t *testing.T) {
	_, n4, _ := net.ParseCIDR("10.1.0.5/24")
	n4.IP = net.ParseIP("10.1.0.5")
	_, n6, _ := net.ParseCIDR("fd00::5/64")
	n6.IP = net.ParseIP("fd00::5")
	rules, err := MasqRules([]net.IPNet{*n4, *n6})
	if err != nil || len(rules) != 2 {
		t.Fatalf("rules %v err %v", rules, err)
	}
	if _, err := SpoofRule("", nil); err == nil {
		t.Error("empty name accepted")
	}
}

func TestApplyRemoveGC(t *testing.T) {
	_, nodePath := roottest.NewNS(t, "nft")
	roottest.In(t, nodePath, func() error {
		c := MasqChain("podnet-test")
		ip := net.IPNet{IP: net.ParseIP("10.1.0.5").To4(), Mask: net.CIDRMask(24, 32)}
		rules, err := MasqRules([]net.IPNet{ip})
		if err != nil {
			return err
		}
		tagA, tagB := Tag("n", "A", "eth0"), Tag("n", "B", "eth0")
		if err := Apply(c, tagA, rules); err != nil {
			t.Fatalf("apply A: %v", err)
		}
		if err := Apply(c, tagA, rules); err != nil { // idempotent
			t.Fatalf("apply A again: %v", err)
		}
		if err := Apply(c, tagB, rules); err != nil {
			t.Fatalf("apply B: %v", err)
		}
		if n, _ := CountTag(c, tagA); n != 1 {
			t.Errorf("A rules = %d, want 1", n)
		}
		sc := SpoofChain("podnet-test")
		sr, err := SpoofRule("vethtest", net.HardwareAddr{2, 0, 0, 0, 0, 1})
		if err != nil {
			return err
		}
		if err := Apply(sc, tagA, [][]expr.Any{sr}); err != nil {
			t.Fatalf("spoof apply: %v", err)
		}
		if n, err := Remove(c, tagA); err != nil || n != 1 {
			t.Errorf("remove A = %d, %v", n, err)
		}
		if n, err := Remove(c, tagA); err != nil || n != 0 {
			t.Errorf("remove A twice = %d, %v", n, err)
		}
		if n, err := GC(c, NetworkPrefix("n"), func(string) bool { return false }); err != nil || n != 1 {
			t.Errorf("gc = %d, %v", n, err)
		}
		if n, err := Remove(MasqChain("podnet-absent"), tagA); err != nil || n != 0 {
			t.Errorf("remove from absent table = %d, %v", n, err)
		}
		if n, err := Remove(sc, tagA); err != nil || n != 1 {
			t.Errorf("spoof remove = %d, %v", n, err)
		}
		return nil
	})
}

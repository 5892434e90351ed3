package policykernel

import (
	"fmt"
	"net/netip"

	"github.com/podnet/podnet/agent/policy"
)

// bigRuleset is n isolated pods (both directions, both families) with
// sets the size a namespace with a handful of policies gives: peers from
// a few namespaces (ranges), a few ports boxes per family.
func bigRuleset(n int) policy.Ruleset {
	rs := policy.Ruleset{Node: "scale"}
	a4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}) }
	a6 := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0xfd, 0xc8, 14: byte(i >> 8), 15: byte(i)})
	}
	for i := range n {
		mk := func(shift int) *policy.Chain {
			c := &policy.Chain{}
			for k := range 5 {
				base := 4*k + shift%3
				c.Any4 = append(c.Any4, policy.AddrRange{From: netip.AddrFrom4([4]byte{10, 100, byte(base), 0}), To: netip.AddrFrom4([4]byte{10, 100, byte(base), 127})})
			}
			for k := range 3 {
				c.Any6 = append(c.Any6, policy.AddrRange{From: netip.AddrFrom16([16]byte{0xfd, 0x64, 2: byte(k), 3: byte(shift)}), To: netip.AddrFrom16([16]byte{0xfd, 0x64, 2: byte(k), 3: byte(shift), 4: 0xff})})
			}
			for k := range 10 {
				peer := netip.AddrFrom4([4]byte{10, 150, byte(k), byte(shift)})
				c.Ports4 = append(c.Ports4, policy.PortBox{Addrs: policy.AddrRange{From: peer, To: peer}, Proto: policy.TCP, Ports: policy.PortRange{From: uint16(8000 + k), To: uint16(8000 + k)}})
			}
			for k := range 5 {
				peer := netip.AddrFrom16([16]byte{0xfd, 0x96, 2: byte(k), 15: byte(shift)})
				c.Ports6 = append(c.Ports6, policy.PortBox{Addrs: policy.AddrRange{From: peer, To: peer}, Proto: policy.UDP, Ports: policy.PortRange{From: 5000, To: uint16(5000 + k)}})
			}
			return c
		}
		rs.Pods = append(rs.Pods, policy.PodRules{
			ID:        fmt.Sprintf("%012x", 0xabc000000+i),
			Namespace: fmt.Sprintf("ns%d", i%20),
			Name:      fmt.Sprintf("pod%d", i),
			IPs:       []netip.Addr{a4(i), a6(i)},
			Ingress:   mk(i % 7),
			Egress:    mk(i%5 + 1),
		})
	}
	return rs
}

// smallRuleset is n isolated pods (both directions, an IPv4 and an IPv6
// address each) with five elements each: ingress one peer range and two
// ports boxes, egress one ports box and one IPv6 peer range.
func smallRuleset(n int) policy.Ruleset {
	rs := policy.Ruleset{Node: "scale"}
	for i := range n {
		peer := netip.AddrFrom4([4]byte{10, 150, byte(i % 7), 1})
		rs.Pods = append(rs.Pods, policy.PodRules{
			ID:        fmt.Sprintf("%012x", 0xabc000000+i),
			Namespace: fmt.Sprintf("ns%d", i%20),
			Name:      fmt.Sprintf("pod%d", i),
			IPs:       []netip.Addr{netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), netip.AddrFrom16([16]byte{0xfd, 0xc8, 14: byte(i >> 8), 15: byte(i)})},
			Ingress: &policy.Chain{
				Any4: []policy.AddrRange{{From: netip.AddrFrom4([4]byte{10, 100, byte(i % 5), 0}), To: netip.AddrFrom4([4]byte{10, 100, byte(i % 5), 255})}},
				Ports4: []policy.PortBox{
					{Addrs: policy.AddrRange{From: peer, To: peer}, Proto: policy.TCP, Ports: policy.PortRange{From: 8080, To: 8080}},
					{Addrs: policy.AddrRange{From: peer.Next(), To: peer.Next()}, Proto: policy.TCP, Ports: policy.PortRange{From: 8080, To: 8090}},
				},
			},
			Egress: &policy.Chain{
				Ports4: []policy.PortBox{{Addrs: policy.AddrRange{From: netip.AddrFrom4([4]byte{10, 96, 0, 10}), To: netip.AddrFrom4([4]byte{10, 96, 0, 10})}, Proto: policy.UDP, Ports: policy.PortRange{From: 53, To: 53}}},
				Any6:   []policy.AddrRange{{From: netip.AddrFrom16([16]byte{0xfd, 0x64, 3: byte(i % 3)}), To: netip.AddrFrom16([16]byte{0xfd, 0x64, 3: byte(i % 3), 4: 0xff})}},
			},
		})
	}
	return rs
}

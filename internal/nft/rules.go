package nft

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// MasqChain is the masquerade chain of a plugin's table: inet family, a nat
// base chain on postrouting at srcnat priority.
func MasqChain(table string) Chain {
	return Chain{
		Family:   nftables.TableFamilyINet,
		Table:    table,
		Name:     "postrouting",
		Type:     nftables.ChainTypeNAT,
		Hook:     nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
}

// MasqRules returns, for each pod address, the rule
//
//	ip saddr POD ip daddr != POD-SUBNET ip daddr != 224.0.0.0/4 masquerade
//
// (ip6 with ff00::/8 for IPv6): traffic from the pod to anything outside its
// subnet that is not multicast leaves with the node's address.
func MasqRules(pods []net.IPNet) ([][]expr.Any, error) {
	var out [][]expr.Any
	for _, p := range pods {
		var proto byte
		var saddrOff, daddrOff, alen uint32
		var mcast net.IPNet
		ip := p.IP.To4()
		if ip != nil && len(p.Mask) == net.IPv4len {
			proto, saddrOff, daddrOff, alen = unix.NFPROTO_IPV4, 12, 16, 4
			mcast = net.IPNet{IP: net.IPv4(224, 0, 0, 0).To4(), Mask: net.CIDRMask(4, 32)}
		} else if ip = p.IP.To16(); ip != nil && len(p.Mask) == net.IPv6len {
			proto, saddrOff, daddrOff, alen = unix.NFPROTO_IPV6, 8, 24, 16
			mcast = net.IPNet{IP: net.ParseIP("ff00::"), Mask: net.CIDRMask(8, 128)}
		} else {
			return nil, fmt.Errorf("masquerade: bad pod address %s", p.String())
		}
		subnet := net.IPNet{IP: ip.Mask(p.Mask), Mask: p.Mask}
		r := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: alen},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(ip)},
		}
		r = append(r, notInNet(daddrOff, alen, subnet)...)
		r = append(r, notInNet(daddrOff, alen, mcast)...)
		r = append(r, &expr.Counter{}, &expr.Masq{})
		out = append(out, r)
	}
	return out, nil
}

// notInNet matches a network-header address at off that lies outside n.
func notInNet(off, alen uint32, n net.IPNet) []expr.Any {
	ones, _ := n.Mask.Size()
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen}}
	if ones != int(alen)*8 {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: alen, Mask: []byte(n.Mask), Xor: make([]byte, alen)})
	}
	ip := n.IP.To4()
	if alen == 16 {
		ip = n.IP.To16()
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(ip.Mask(n.Mask))})
}

// SpoofChain is the MAC spoof-check chain of a plugin's table: bridge
// family, a filter base chain on prerouting at priority -300 (before the
// bridge's own nat and filter chains).
func SpoofChain(table string) Chain {
	return Chain{
		Family:   nftables.TableFamilyBridge,
		Table:    table,
		Name:     "prerouting",
		Type:     nftables.ChainTypeFilter,
		Hook:     nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRef(-300),
	}
}

// SpoofRule returns the rule
//
//	iifname HOSTIF ether saddr != MAC counter drop
//
// which drops every frame the pod sends with a source MAC other than its
// own.
func SpoofRule(hostIf string, mac net.HardwareAddr) ([]expr.Any, error) {
	if len(hostIf) == 0 || len(hostIf) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("spoof check: bad interface name %q", hostIf)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("spoof check: bad MAC %q", mac.String())
	}
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, hostIf)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(mac)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}, nil
}

package portmap

import (
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
)

// Names of the table's sets and maps (see the package comment for the
// rules that use them).
const (
	mapPorts4   = "hostports4"   // inet_proto . inet_service : ipv4_addr . inet_service
	mapPorts6   = "hostports6"   // inet_proto . inet_service : ipv6_addr . inet_service
	mapIPPorts4 = "hostipports4" // ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
	mapIPPorts6 = "hostipports6" // ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
	setSNAT4    = "snat4"        // ipv4_addr: pods whose hairpin and localhost traffic is masqueraded
	setSNAT6    = "snat6"        // ipv6_addr
	setMasq4    = "masqall4"     // ipv4_addr: pods all of whose host-port traffic is masqueraded
	setMasq6    = "masqall6"     // ipv6_addr
)

// allSets lists every set and map, in rendering order.
var allSets = []string{mapIPPorts4, mapIPPorts6, mapPorts4, mapPorts6, setSNAT4, setSNAT6, setMasq4, setMasq6}

// Elem is one set or map element that an attachment owns. Its owner is the
// attachment's tag, stored as the element's comment.
type Elem struct {
	Set      string
	HostIP   net.IP // hostipports maps only
	Proto    uint8  // maps only
	HostPort uint16 // maps only
	PodIP    net.IP // map value address, or the set element
	PodPort  uint16 // maps only
	Owner    string
}

func (e Elem) isMap() bool { return strings.HasPrefix(e.Set, "host") }

func addrBytes(ip net.IP, v6 bool) []byte {
	if v6 {
		return append([]byte(nil), ip.To16()...)
	}
	return append([]byte(nil), ip.To4()...)
}

func is6(set string) bool { return strings.HasSuffix(set, "6") }

// Key is the element's key as the kernel stores it: concatenated fields
// each padded to 4 bytes, ports in network byte order.
func (e Elem) Key() []byte {
	v6 := is6(e.Set)
	if !e.isMap() {
		return addrBytes(e.PodIP, v6)
	}
	var k []byte
	if e.HostIP != nil {
		k = addrBytes(e.HostIP, v6)
	}
	k = append(k, e.Proto, 0, 0, 0)
	k = binary.BigEndian.AppendUint16(k, e.HostPort)
	return append(k, 0, 0)
}

// Val is a map element's value (pod address . pod port), nil for sets.
func (e Elem) Val() []byte {
	if !e.isMap() {
		return nil
	}
	v := addrBytes(e.PodIP, is6(e.Set))
	v = binary.BigEndian.AppendUint16(v, e.PodPort)
	return append(v, 0, 0)
}

// decodeElem is the inverse of Key and Val.
func decodeElem(set string, key, val []byte, owner string) (Elem, error) {
	e := Elem{Set: set, Owner: owner}
	alen := 4
	if is6(set) {
		alen = 16
	}
	if !e.isMap() {
		if len(key) != alen {
			return e, fmt.Errorf("set %s: element key of %d bytes", set, len(key))
		}
		e.PodIP = net.IP(append([]byte(nil), key...))
		return e, nil
	}
	if strings.HasPrefix(set, "hostip") {
		if len(key) != alen+8 {
			return e, fmt.Errorf("map %s: element key of %d bytes", set, len(key))
		}
		e.HostIP = net.IP(append([]byte(nil), key[:alen]...))
		key = key[alen:]
	} else if len(key) != 8 {
		return e, fmt.Errorf("map %s: element key of %d bytes", set, len(key))
	}
	if len(val) != alen+4 {
		return e, fmt.Errorf("map %s: element value of %d bytes", set, len(val))
	}
	e.Proto = key[0]
	e.HostPort = binary.BigEndian.Uint16(key[4:6])
	e.PodIP = net.IP(append([]byte(nil), val[:alen]...))
	e.PodPort = binary.BigEndian.Uint16(val[alen : alen+2])
	return e, nil
}

// sameKey reports whether a and b are the same element of the same set.
func sameKey(a, b Elem) bool {
	return a.Set == b.Set && string(a.Key()) == string(b.Key())
}

// same reports whether a and b are identical, owner included.
func same(a, b Elem) bool {
	return sameKey(a, b) && string(a.Val()) == string(b.Val()) && a.Owner == b.Owner
}

// String renders the element in nft(8) syntax, as `nft list` shows it.
func (e Elem) String() string {
	var s string
	if e.isMap() {
		if e.HostIP != nil {
			s = e.HostIP.String() + " . "
		}
		s += fmt.Sprintf("%s . %d : %s . %d", protoName(e.Proto), e.HostPort, e.PodIP, e.PodPort)
	} else {
		s = e.PodIP.String()
	}
	return fmt.Sprintf("add element inet %s %s { %s comment %q }", TableName, e.Set, s, e.Owner)
}

// Desired compiles the elements one attachment needs: for each mapping, a
// DNAT element per address family the pod has (a mapping with hostIP only
// in that address's family, and unspecified 0.0.0.0 or :: means "any
// address of that family"), and the pod's address in snat4/6 (or
// masqall4/6 with masqAll) when snat is on. Mappings of a family the pod
// has no address in are skipped, as in the reference plugin.
func Desired(c *Config, pod4, pod6 net.IP, owner string) []Elem {
	var out []Elem
	fam := map[bool]bool{}
	for _, m := range c.Mappings {
		for _, v6 := range []bool{false, true} {
			pod := pod4
			if v6 {
				pod = pod6
			}
			if pod == nil {
				continue
			}
			e := Elem{Proto: m.Proto, HostPort: m.HostPort, PodIP: pod, PodPort: m.ContainerPort, Owner: owner}
			switch {
			case m.HostIP == nil:
				e.Set = pick(v6, mapPorts4, mapPorts6)
			case (m.HostIP.To4() == nil) != v6:
				continue
			case m.HostIP.IsUnspecified():
				e.Set = pick(v6, mapPorts4, mapPorts6)
			default:
				e.Set, e.HostIP = pick(v6, mapIPPorts4, mapIPPorts6), m.HostIP
			}
			out = append(out, e)
			fam[v6] = true
		}
	}
	if c.SNAT {
		for _, v6 := range []bool{false, true} {
			if !fam[v6] {
				continue
			}
			pod := pick(v6, pod4, pod6)
			set := pick(v6, setSNAT4, setSNAT6)
			if c.MasqAll {
				set = pick(v6, setMasq4, setMasq6)
			}
			out = append(out, Elem{Set: set, PodIP: pod, Owner: owner})
		}
	}
	sortElems(out)
	return out
}

func pick[T any](second bool, a, b T) T {
	if second {
		return b
	}
	return a
}

func setIndex(s string) int {
	for i, n := range allSets {
		if n == s {
			return i
		}
	}
	return len(allSets)
}

func sortElems(es []Elem) {
	sort.SliceStable(es, func(i, j int) bool {
		if a, b := setIndex(es[i].Set), setIndex(es[j].Set); a != b {
			return a < b
		}
		return string(es[i].Key()) < string(es[j].Key())
	})
}

// Render renders elements one per line (golden tests, operators).
func Render(es []Elem) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// plan is what one batch does to the elements: delete, then add.
type plan struct {
	del, add []Elem
}

// planAdd computes the batch of an ADD from the current elements: the
// attachment's stale elements go, elements with a desired key owned by
// another attachment are taken over (the newest ADD wins a host port, and
// the old owner's DEL will not touch it), and identical elements stay.
func planAdd(cur, want []Elem, owner string) plan {
	var p plan
	for _, c := range cur {
		keep := false
		conflict := false
		for _, w := range want {
			if same(c, w) {
				keep = true
				break
			}
			if sameKey(c, w) {
				conflict = true
			}
		}
		if !keep && (c.Owner == owner || conflict) {
			p.del = append(p.del, c)
		}
	}
	for _, w := range want {
		have := false
		for _, c := range cur {
			if same(c, w) {
				have = true
				break
			}
		}
		if !have {
			p.add = append(p.add, w)
		}
	}
	return p
}

// planDel deletes the elements whose owner matches.
func planDel(cur []Elem, match func(owner string) bool) plan {
	var p plan
	for _, c := range cur {
		if match(c.Owner) {
			p.del = append(p.del, c)
		}
	}
	return p
}

// missing returns the wanted elements absent from cur (CHECK).
func missing(cur, want []Elem) []Elem {
	var out []Elem
	for _, w := range want {
		found := false
		for _, c := range cur {
			if same(c, w) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, w)
		}
	}
	return out
}

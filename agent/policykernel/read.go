package policykernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// readRetries bounds how often read starts over because another batch
// committed in the namespace while it listed (netlink dumps of several
// messages can then skip objects, and google/nftables does not report it).
const readRetries = 10

func notFound(err error) bool {
	// google/nftables flattens netlink errors with %v.
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error()))
}

// read lists the table as the kernel holds it. The listing is consistent:
// it is repeated until the ruleset generation is the same before and after.
func (w *Writer) read() (*state, error) {
	for try := 0; ; try++ {
		g0, err := w.generation()
		if err != nil {
			return nil, err
		}
		s, err := w.readOnce()
		if err != nil {
			return nil, err
		}
		g1, err := w.generation()
		if err != nil {
			return nil, err
		}
		if g0 == g1 {
			return s, nil
		}
		if try >= readRetries {
			return nil, fmt.Errorf("nftables: table %s changed during each of %d listings", TableName, try+1)
		}
	}
}

// generation returns the namespace's nftables ruleset generation, which
// every committed batch (of any table) increments.
func (w *Writer) generation() (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: w.ns})
	if err != nil {
		return 0, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("nftables: get generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("nftables: no generation in reply")
}

func (w *Writer) conn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(w.ns), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	return c, nil
}

func (w *Writer) readOnce() (*state, error) {
	c, err := w.conn()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	s := newState()
	if t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); notFound(err) || (err == nil && t == nil) {
		return s, nil
	} else if err != nil {
		return nil, fmt.Errorf("nftables: list table %s: %w", TableName, err)
	}
	s.table = true

	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	var profiles []string
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		switch {
		case ch.Name == baseChain:
			rules, err := c.GetRules(table, ch)
			if err != nil && !notFound(err) {
				return nil, fmt.Errorf("nftables: list rules of %s: %w", ch.Name, err)
			}
			s.base = true
			s.baseOK = rulesMatch(rules, baseRules())
			s.baseBad = !baseChainOK(ch)
		case isProfileChain(ch.Name):
			profiles = append(profiles, ch.Name)
		default:
			s.chains[ch.Name] = &chainState{}
		}
	}
	// A profile chain is checked by its rules' signature: one dump of
	// its rules each.
	dump, err := w.dumpRules(profiles)
	if err != nil {
		return nil, err
	}
	for _, n := range profiles {
		s.chains[n] = rawSig(dump[n])
	}

	sets, err := c.GetSets(table)
	if err != nil && !notFound(err) {
		return nil, fmt.Errorf("nftables: list sets: %w", err)
	}
	for _, set := range sets {
		if i := mapIdx(set.Name); i >= 0 {
			if err := s.readMap(c, i, set); err != nil {
				return nil, err
			}
			continue
		}
		ss := &setState{kind: kindOf(set.Name)}
		s.sets[set.Name] = ss
		if ss.kind == kindOther {
			continue
		}
		if ss.bad = !setTypeOK(set, setDef(set.Name, ss.kind)); ss.bad {
			w.log.Warn("policy set has another type than its name says; it will be replaced", "set", set.Name)
			continue
		}
		els, err := c.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("nftables: list set %s: %w", set.Name, err)
		}
		ss.els = make(map[elemKey]struct{}, len(els))
		for _, el := range els {
			if len(el.Key) != ss.kind.keyLen() || el.IntervalEnd && !ss.kind.interval() {
				w.log.Warn("policy set has elements this writer does not make; it will be replaced", "set", set.Name)
				ss.bad = true
				break
			}
			ss.els[elemKey{key: string(el.Key), end: el.IntervalEnd}] = struct{}{}
		}
	}
	return s, nil
}

func baseChainOK(ch *nftables.Chain) bool {
	want := baseChainDef()
	return ch.Type == want.Type && ch.Hooknum != nil && *ch.Hooknum == *want.Hooknum &&
		ch.Priority != nil && *ch.Priority == *want.Priority &&
		ch.Policy != nil && *ch.Policy == *want.Policy
}

func (s *state) readMap(c *nftables.Conn, i int, set *nftables.Set) error {
	s.maps[i] = map[netip.Addr]string{}
	if !setTypeOK(set, verdictMap(i)) {
		s.mapBad[i] = true
		return nil
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("nftables: list map %s: %w", set.Name, err)
	}
	for _, el := range els {
		a, ok := netip.AddrFromSlice(el.Key)
		chain, err := verdictChain(el.Val)
		if !ok || err != nil {
			s.mapBad[i] = true
			continue
		}
		// An element that jumps nowhere we know is recorded with
		// chain "": it differs from every desired element and goes.
		s.maps[i][a] = chain
	}
	return nil
}

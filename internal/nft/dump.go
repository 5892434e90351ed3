package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netlinkx"
)

// Why podnet lists nftables objects itself: a netlink dump spanning several
// messages while any nftables batch commits in the namespace (another
// attachment's ADD or DEL, another component's table) can silently skip
// objects; the kernel then sets NLM_F_DUMP_INTR. google/nftables ignores
// that flag, and its netlink library (mdlayher/netlink) drops the final
// DONE message, which alone carries the flag when the change came after the
// last object was sent. DEL and GC deciding from such a listing leave an
// attachment's rules or set elements behind. So every listing that decides
// what to delete goes through dump: vishvananda/netlink's executor sees the
// flag on every message, DONE included, and netlinkx.Retry repeats the dump
// until the kernel reports it consistent.

// dump lists the objects of one nftables dump: request get (NFT_MSG_GET*)
// for family with attrs, each reply of type reply (NFT_MSG_NEW*) decoded by
// decode from its attributes. An interrupted dump is retried; a missing
// table, chain or set (ENOENT) lists nothing.
func dump[T any](family nftables.TableFamily, get, reply int, attrs []*nl.RtAttr, decode func(attrs []byte) ([]T, error)) ([]T, error) {
	return consistentDump(func(each func(msg []byte) bool) error {
		req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|get, unix.NLM_F_DUMP)
		// struct nfgenmsg: family, version, resource id.
		req.AddData(nfgenmsg{byte(family), unix.NFNETLINK_V0, 0, 0})
		for _, a := range attrs {
			req.AddData(a)
		}
		return req.ExecuteIter(unix.NETLINK_NETFILTER, uint16(unix.NFNL_SUBSYS_NFTABLES<<8|reply), each)
	}, decode)
}

// consistentDump is dump without the socket: exec runs the dump once,
// passing each reply (nfgenmsg header, then attributes) to each until each
// returns false, and returns the dump's error (netlink.ErrDumpInterrupted
// of vishvananda/netlink when the kernel flagged it). Only the objects of a
// try that was not interrupted are returned.
func consistentDump[T any](exec func(each func(msg []byte) bool) error, decode func(attrs []byte) ([]T, error)) ([]T, error) {
	out, err := netlinkx.Retry(func() ([]T, error) {
		var out []T
		var derr error
		err := exec(func(msg []byte) bool {
			if len(msg) < 4 {
				return true
			}
			ts, err := decode(msg[4:])
			if err != nil {
				derr = err
				return false
			}
			out = append(out, ts...)
			return true
		})
		if derr != nil {
			return nil, derr
		}
		return out, err
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// nfgenmsg is the nfnetlink header that precedes the attributes.
type nfgenmsg [4]byte

func (m nfgenmsg) Len() int          { return len(m) }
func (m nfgenmsg) Serialize() []byte { return m[:] }

// SetElement is a set or map element as listed: its key, its data (maps
// only) and its comment. Interval sets list their end markers as elements
// too (podnet's sets are not interval sets).
type SetElement struct {
	Key, Val []byte
	Comment  string
}

// SetElements lists the elements of set in table. An interrupted dump is
// retried (see dump); a missing table or set has no elements.
func SetElements(family nftables.TableFamily, table, set string) ([]SetElement, error) {
	es, err := dump(family, unix.NFT_MSG_GETSETELEM, unix.NFT_MSG_NEWSETELEM, []*nl.RtAttr{
		nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_TABLE, nl.ZeroTerminated(table)),
		nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_SET, nl.ZeroTerminated(set)),
	}, decodeElemList)
	if err != nil {
		return nil, fmt.Errorf("nftables: list set %s %s/%s: %w", familyName(family), table, set, err)
	}
	return es, nil
}

// decodeElemList decodes the attributes of one NEWSETELEM message.
func decodeElemList(b []byte) ([]SetElement, error) {
	ad, err := Decoder(b)
	if err != nil {
		return nil, err
	}
	var out []SetElement
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				if list.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				var e SetElement
				list.Nested(func(el *netlink.AttributeDecoder) error {
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							el.Nested(func(d *netlink.AttributeDecoder) error { e.Key = dataValue(d); return nil })
						case unix.NFTA_SET_ELEM_DATA:
							el.Nested(func(d *netlink.AttributeDecoder) error { e.Val = dataValue(d); return nil })
						case unix.NFTA_SET_ELEM_USERDATA:
							s, _ := userdata.GetString(el.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
							e.Comment = strings.TrimRight(s, "\x00")
						}
					}
					return nil
				})
				out = append(out, e)
			}
			return nil
		})
	}
	return out, ad.Err()
}

// Decoder is a netlink attribute decoder for nftables messages (big
// endian attribute values).
func Decoder(b []byte) (*netlink.AttributeDecoder, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

func dataValue(d *netlink.AttributeDecoder) []byte {
	var v []byte
	for d.Next() {
		if d.Type() == unix.NFTA_DATA_VALUE {
			v = append([]byte(nil), d.Bytes()...)
		}
	}
	return v
}

// RuleRef is what DEL and GC need of a rule: its handle and tag (the
// userdata comment).
type RuleRef struct {
	Handle uint64
	Tag    string
}

// RuleRefs lists the handles and tags of chain c's rules (only c's family,
// table and name matter). An interrupted dump is retried (see dump); a
// missing table or chain has no rules.
func RuleRefs(c Chain) ([]RuleRef, error) {
	rs, err := dump(c.Family, unix.NFT_MSG_GETRULE, unix.NFT_MSG_NEWRULE, []*nl.RtAttr{
		nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(c.Table)),
		nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(c.Name)),
	}, decodeRule)
	if err != nil {
		return nil, fmt.Errorf("nftables: list %s: %w", c, err)
	}
	return rs, nil
}

// decodeRule decodes the attributes of one NEWRULE message.
func decodeRule(b []byte) ([]RuleRef, error) {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return nil, err
	}
	var r RuleRef
	for _, a := range attrs {
		switch a.Attr.Type &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER) {
		case unix.NFTA_RULE_HANDLE:
			if len(a.Value) == 8 {
				r.Handle = binary.BigEndian.Uint64(a.Value)
			}
		case unix.NFTA_RULE_USERDATA:
			r.Tag = tagOfUserData(a.Value)
		}
	}
	return []RuleRef{r}, nil
}

package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rawElem is a set element as dumped: key, data and comment.
type rawElem struct {
	key, val []byte
	comment  string
}

// dumpRetries bounds the retries of an interrupted element dump.
const dumpRetries = 10

// dumpElems lists the elements of set in the portmap table. google/nftables
// ignores NLM_F_DUMP_INTR, and a dump spanning several messages while any
// nftables commit happens in the namespace (another component's table
// counts) can silently skip elements; DEL would then leave some behind. So
// this dump retries until the kernel says it is consistent. A missing
// table or set gives no elements.
func dumpElems(set string) ([]rawElem, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		// struct nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	defer conn.Close()
	for try := 0; ; try++ {
		msgs, err := conn.Execute(req)
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) && try < dumpRetries {
				continue
			}
			return nil, fmt.Errorf("nftables: list %s: %w", set, err)
		}
		var out []rawElem
		interrupted := false
		for _, m := range msgs {
			if m.Header.Flags&netlink.DumpInterrupted != 0 {
				interrupted = true
			}
			if len(m.Data) < 4 {
				continue
			}
			es, err := decodeElemList(m.Data[4:])
			if err != nil {
				return nil, fmt.Errorf("nftables: list %s: %w", set, err)
			}
			out = append(out, es...)
		}
		if !interrupted {
			return out, nil
		}
		if try >= dumpRetries {
			return nil, fmt.Errorf("nftables: list %s: dump still interrupted after %d tries", set, dumpRetries)
		}
	}
}

func decoder(b []byte) (*netlink.AttributeDecoder, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

// decodeElemList decodes the attributes of one NEWSETELEM message.
func decodeElemList(b []byte) ([]rawElem, error) {
	ad, err := decoder(b)
	if err != nil {
		return nil, err
	}
	var out []rawElem
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				if list.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				var e rawElem
				list.Nested(func(el *netlink.AttributeDecoder) error {
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							el.Nested(func(d *netlink.AttributeDecoder) error { e.key = dataValue(d); return nil })
						case unix.NFTA_SET_ELEM_DATA:
							el.Nested(func(d *netlink.AttributeDecoder) error { e.val = dataValue(d); return nil })
						case unix.NFTA_SET_ELEM_USERDATA:
							s, _ := userdata.GetString(el.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
							e.comment = strings.TrimRight(s, "\x00")
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

func dataValue(d *netlink.AttributeDecoder) []byte {
	var v []byte
	for d.Next() {
		if d.Type() == unix.NFTA_DATA_VALUE {
			v = append([]byte(nil), d.Bytes()...)
		}
	}
	return v
}

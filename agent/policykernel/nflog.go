package policykernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nft"
)

// nfnetlink_log (linux/netfilter/nfnetlink_log.h); x/sys/unix lacks them.
const (
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulnlCfgCmdBind = 1
	nfulaPayload     = 9
	nfulaPrefix      = 10
)

// LoggedDrop is one packet a profile chain dropped and logged (WithNFLOG): the
// profile chain (ingress-<H> or egress-<H>, the log prefix) and the packet's addresses,
// protocol and destination port (0 for protocols without ports).
type LoggedDrop struct {
	Chain    string
	Src, Dst netip.Addr
	Proto    uint8
	Port     uint16
}

// Ingress reports whether d was dropped by an ingress profile chain (the
// isolated pod is then the destination), not an egress one (the source).
func (d LoggedDrop) Ingress() bool { return strings.HasPrefix(d.Chain, ingressPrefix) }

// Pod is the address of the isolated pod whose profile chain dropped d:
// a profile chain is shared by every pod with the same rules, so its name
// does not tell the pod; the packet does.
func (d LoggedDrop) Pod() netip.Addr {
	if d.Ingress() {
		return d.Dst
	}
	return d.Src
}

// LogReader reads the drops the profile chains log to one NFLOG group.
type LogReader struct{ c *netlink.Conn }

// ListenLog binds NFLOG group in the namespace nsFd (-1: the calling
// thread's). Only one listener per group and namespace gets the packets.
func ListenLog(nsFd int, group uint16) (*LogReader, error) {
	cfg := &netlink.Config{}
	if nsFd >= 0 {
		cfg.NetNS = nsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nflog: %w", err)
	}
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}})
	if err == nil {
		_, err = c.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(hdr, attrs...),
		})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	return &LogReader{c: c}, nil
}

// Read blocks until logged packets arrive (or the deadline passes) and
// returns those of podnet's profile chains.
func (r *LogReader) Read() ([]LoggedDrop, error) {
	msgs, err := r.c.Receive()
	if err != nil {
		return nil, err
	}
	var out []LoggedDrop
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
			continue
		}
		if d, ok := parseLogged(m.Data[4:]); ok && isProfileChain(d.Chain) {
			out = append(out, d)
		}
	}
	return out, nil
}

// SetDeadline bounds the next Read.
func (r *LogReader) SetDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }

// Close unbinds.
func (r *LogReader) Close() error { return r.c.Close() }

func parseLogged(b []byte) (LoggedDrop, bool) {
	var d LoggedDrop
	ad, err := nft.Decoder(b)
	if err != nil {
		return d, false
	}
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case nfulaPrefix:
			d.Chain = strings.TrimRight(ad.String(), "\x00")
		case nfulaPayload:
			payload = ad.Bytes()
		}
	}
	if ad.Err() != nil {
		return d, false
	}
	var l4 []byte
	switch {
	case len(payload) >= 20 && payload[0]>>4 == 4:
		ihl := int(payload[0]&0x0f) * 4
		d.Proto = payload[9]
		d.Src = netip.AddrFrom4([4]byte(payload[12:16]))
		d.Dst = netip.AddrFrom4([4]byte(payload[16:20]))
		if ihl >= 20 && len(payload) > ihl {
			l4 = payload[ihl:]
		}
	case len(payload) >= 40 && payload[0]>>4 == 6:
		d.Proto = payload[6]
		d.Src = netip.AddrFrom16([16]byte(payload[8:24]))
		d.Dst = netip.AddrFrom16([16]byte(payload[24:40]))
		l4 = payload[40:]
	default:
		return d, d.Chain != ""
	}
	if (d.Proto == unix.IPPROTO_TCP || d.Proto == unix.IPPROTO_UDP || d.Proto == unix.IPPROTO_SCTP) && len(l4) >= 4 {
		d.Port = binary.BigEndian.Uint16(l4[2:4])
	}
	return d, true
}

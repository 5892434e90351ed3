package policykernel_test

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policykernel"
)

// nfnetlink_log (linux/netfilter/nfnetlink_log.h); x/sys/unix lacks them.
const (
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulnlCfgCmdBind = 1
	nfulaPrefix      = 10
)

// nflogListen binds NFLOG group in the namespace nsFd and returns the
// prefixes of the packets logged there until d passes or want is seen.
func nflogListen(t *testing.T, nsFd int, group uint16) func(want string, d time.Duration) []string {
	t.Helper()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsFd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, attrs...),
	}); err != nil {
		t.Fatalf("bind NFLOG group %d: %v", group, err)
	}
	return func(want string, d time.Duration) []string {
		var seen []string
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			_ = c.SetReadDeadline(deadline)
			msgs, err := c.Receive()
			if err != nil {
				break
			}
			for _, m := range msgs {
				if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
					continue
				}
				ad, err := netlink.NewAttributeDecoder(m.Data[4:])
				if err != nil {
					continue
				}
				ad.ByteOrder = binary.BigEndian
				for ad.Next() {
					if ad.Type() == nfulaPrefix {
						p := strings.TrimRight(ad.String(), "\x00")
						seen = append(seen, p)
						if p == want {
							return seen
						}
					}
				}
			}
		}
		return seen
	}
}

func TestNFLOG(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	const group = 17
	w, err := policykernel.Open(tp.nodeFd, nil, policykernel.WithNFLOG(group))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rs := baseRuleset(tp)
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st.RulesAdded != 5+3*6 { // base chain, in-A, eg-A, in-C
		t.Errorf("rules with NFLOG: %+v", st)
	}
	next := nflogListen(t, tp.nodeFd, group)
	check(t, []flow{
		{"logged drop", C.path, A.v4, "tcp", 7001, false},
		{"not logged", B.path, A.v4, "tcp", 7001, true},
	})
	if seen := next("in-"+idA, 3*time.Second); len(seen) == 0 || seen[len(seen)-1] != "in-"+idA {
		t.Errorf("NFLOG group %d: prefixes %q, want in-%s", group, seen, idA)
	}
	check(t, []flow{{"logged egress drop", A.path, B.v4, "udp", 7001, false}})
	if seen := next("eg-"+idA, 3*time.Second); len(seen) == 0 || seen[len(seen)-1] != "eg-"+idA {
		t.Errorf("NFLOG group %d: prefixes %q, want eg-%s", group, seen, idA)
	}
	if d, err := w.Dropped(); err != nil || d["in-"+idA] == 0 || d["eg-"+idA] == 0 {
		t.Errorf("Dropped with NFLOG: %v, %v", d, err)
	}

	// Same group: adoption sees no difference. No group: the pod chains'
	// rules are rewritten, and drops are no longer logged.
	adoptsUnchanged(t, tp, rs, policykernel.WithNFLOG(group))
	w2, err := policykernel.Open(tp.nodeFd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if st, err := w2.Apply(rs); err != nil || st.RulesAdded != 3*5 || st.ElementsAdded+st.ElementsRemoved != 0 {
		t.Errorf("dropping NFLOG: %+v, %v", st, err)
	}
	check(t, []flow{{"unlogged drop", C.path, A.v4, "tcp", 7001, false}})
	if seen := next("in-"+idA, time.Second); len(seen) != 0 {
		t.Errorf("logged without NFLOG: %q", seen)
	}
	check(t, baseFlows(tp))
}

package policykernel_test

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policykernel"
)

// nflogListen binds NFLOG group in the namespace nsFd and returns a
// function that reads logged drops until d passes or one of chain want is
// seen; it returns what it saw.
func nflogListen(t *testing.T, nsFd int, group uint16) func(want string, d time.Duration) []policykernel.LoggedDrop {
	t.Helper()
	r, err := policykernel.ListenLog(nsFd, group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return func(want string, d time.Duration) []policykernel.LoggedDrop {
		var seen []policykernel.LoggedDrop
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			_ = r.SetDeadline(deadline)
			ds, err := r.Read()
			if err != nil {
				break
			}
			seen = append(seen, ds...)
			for _, x := range ds {
				if x.Chain == want {
					return seen
				}
			}
		}
		return seen
	}
}

// lastIs says whether seen ends with a drop of chain from src to dst:port.
func lastIs(seen []policykernel.LoggedDrop, chain string, src, dst netip.Addr, proto uint8, port uint16) bool {
	if len(seen) == 0 {
		return false
	}
	l := seen[len(seen)-1]
	return l.Chain == chain && l.Src == src && l.Dst == dst && l.Proto == proto && l.Port == port
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
	ingA, egA, ingC := baseProfiles()
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	// The base chain, then each profile's rules, log and counter drop.
	if want := 5 + len(ingA.Rules) + len(egA.Rules) + len(ingC.Rules) + 3*2; st.RulesAdded != want {
		t.Errorf("rules with NFLOG: %+v, want %d", st, want)
	}
	next := nflogListen(t, tp.nodeFd, group)
	check(t, []flow{
		{"logged drop", C.path, A.v4, "tcp", 7001, false},
		{"not logged", B.path, A.v4, "tcp", 7001, true},
	})
	if seen := next(ingA.Name, 3*time.Second); !lastIs(seen, ingA.Name, C.v4, A.v4, unix.IPPROTO_TCP, 7001) {
		t.Errorf("NFLOG group %d: %+v, want %s %s -> %s tcp/7001", group, seen, ingA.Name, C.v4, A.v4)
	}
	check(t, []flow{{"logged egress drop", A.path, B.v4, "udp", 7001, false}})
	if seen := next(egA.Name, 3*time.Second); !lastIs(seen, egA.Name, A.v4, B.v4, unix.IPPROTO_UDP, 7001) {
		t.Errorf("NFLOG group %d: %+v, want %s %s -> %s udp/7001", group, seen, egA.Name, A.v4, B.v4)
	}
	check(t, []flow{{"logged v6 drop", B.path, C.v6, "tcp", 7001, false}})
	if seen := next(ingC.Name, 3*time.Second); !lastIs(seen, ingC.Name, B.v6, C.v6, unix.IPPROTO_TCP, 7001) {
		t.Errorf("NFLOG group %d: %+v, want %s %s -> %s tcp/7001", group, seen, ingC.Name, B.v6, C.v6)
	}
	if d, err := w.Dropped(); err != nil || d[ingA.Name] == 0 || d[egA.Name] == 0 || d[ingC.Name] == 0 {
		t.Errorf("Dropped with NFLOG: %v, %v", d, err)
	}

	// Same group: adoption sees no difference. No group: the profile
	// chains' rules are rewritten, and drops are no longer logged.
	adoptsUnchanged(t, tp, rs, policykernel.WithNFLOG(group))
	w2, err := policykernel.Open(tp.nodeFd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if want := len(ingA.Rules) + len(egA.Rules) + len(ingC.Rules) + 3; true {
		if st, err := w2.Apply(rs); err != nil || st.RulesAdded != want || st.ElementsAdded+st.ElementsRemoved+st.ChainsAdded+st.ChainsRemoved != 0 {
			t.Errorf("dropping NFLOG: %+v, %v, want %d rules", st, err, want)
		}
	}
	check(t, []flow{{"unlogged drop", C.path, A.v4, "tcp", 7001, false}})
	if seen := next(ingA.Name, time.Second); len(seen) != 0 {
		t.Errorf("logged without NFLOG: %+v", seen)
	}
	check(t, baseFlows(tp))
	adoptsUnchanged(t, tp, rs)
}

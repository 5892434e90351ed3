package policykernel_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/nftables"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
	"github.com/podnet/podnet/internal/roottest"
)

// background probes f over and over until stop is called, which returns
// how many probes ran and the failures.
func background(f flow) (stop func() (int, []error)) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	var mu sync.Mutex
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := f.run(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			n.Add(1)
		}
	}()
	return func() (int, []error) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return int(n.Load()), errs
	}
}

// without returns rs with the members of set removed (a private copy).
func without(rs policy.Ruleset, set string) policy.Ruleset {
	rs.AddrSets = slices.Clone(rs.AddrSets)
	for i := range rs.AddrSets {
		if rs.AddrSets[i].Name == set {
			rs.AddrSets[i].Addrs = nil
		}
	}
	return rs
}

func TestUpdateWhileTrafficFlows(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w, rs := tp.openBase(t)
	// Flows the updates do not concern must never see a drop (nor a
	// pass where they should drop) while the updates land.
	stops := []func() (int, []error){
		background(flow{"unconcerned allowed flow", C.path, A.v4, "tcp", 7000, true}),
		background(flow{"unconcerned allowed flow v6", C.path, A.v6, "udp", 7000, true}),
		background(flow{"unconcerned denied flow", C.path, A.v4, "tcp", 7001, false}),
	}
	noB := without(without(rs, setB4), setB6)
	for round := range 3 {
		st, err := w.Apply(noB)
		if err != nil {
			t.Fatal(err)
		}
		if st.ElementsRemoved != 2 || st.ElementsAdded != 0 || st.Batches != 1 || st.Messages != 2 || st.ChainsAdded+st.ChainsRemoved+st.SetsAdded+st.SetsRemoved+st.RulesAdded != 0 {
			t.Errorf("round %d: removing B: %+v", round, st)
		}
		check(t, []flow{
			{"removed peer", B.path, A.v4, "tcp", 7001, false},
			{"removed peer v6", B.path, A.v6, "udp", 7001, false},
			{"removed egress peer", A.path, B.v4, "tcp", 7000, false},
		})
		st, err = w.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		if st.ElementsAdded != 2 || st.ElementsRemoved != 0 || st.Messages != 2 {
			t.Errorf("round %d: adding B back: %+v", round, st)
		}
		check(t, []flow{
			{"peer back", B.path, A.v4, "tcp", 7001, true},
			{"peer back v6", B.path, A.v6, "udp", 7001, true},
			{"egress peer back", A.path, B.v4, "tcp", 7000, true},
		})
	}
	stopProbers(t, stops)
}

// Incremental changes send only their difference: a member out and in,
// a pod moved to a new profile (the old one and its sets go), isolation
// removed, everything removed.
func TestIncremental(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w, rs := tp.openBase(t)
	same := func(what string, rs policy.Ruleset) {
		t.Helper()
		if st, err := w.Apply(rs); err != nil || st.Changed() {
			t.Errorf("%s, applied again: %+v, %v", what, st, err)
		}
		adoptsUnchanged(t, tp, rs)
	}
	only := func(what string, st policy.Ruleset, want policykernel.Stats) {
		t.Helper()
		got, err := w.Apply(st)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got.Duration, got.Messages = 0, 0
		if got != want {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}

	// A member out and back in.
	only("B out of its IPv4 set", without(rs, setB4), policykernel.Stats{ElementsRemoved: 1, Batches: 1})
	check(t, []flow{
		{"B's IPv4 member removed", B.path, A.v4, "tcp", 7001, false},
		{"B's IPv6 member kept", B.path, A.v6, "tcp", 7001, true},
	})
	same("B out", without(rs, setB4))
	only("B back", rs, policykernel.Stats{ElementsAdded: 1, Batches: 1})
	check(t, []flow{{"B's IPv4 member back", B.path, A.v4, "tcp", 7001, true}})

	// C moves to a new profile: A on everything (IPv4 only), with a new
	// set; its old profile and the two cidr sets only it used go.
	ingA, egA, ingC := baseProfiles()
	ingC2 := profile(false, policy.Rule{Peers: "pods4-00000000000a"})
	moved := rs
	moved.Pods = slices.Clone(rs.Pods)
	moved.Pods[1].IngressChain = ingC2.Name
	moved.Profiles = []policy.Profile{ingA, egA, ingC2}
	moved.AddrSets = append(slices.DeleteFunc(slices.Clone(rs.AddrSets), func(s policy.AddrSet) bool { return s.Name == setNet4 || s.Name == setNet6 }),
		podsSet("pods4-00000000000a", A.v4))
	moved = sorted(moved)
	only("C moved", moved, policykernel.Stats{ChainsAdded: 1, SetsAdded: 1, RulesAdded: 2, ElementsAdded: 1 + 2, ElementsRemoved: 2, ChainsRemoved: 1, SetsRemoved: 2, Batches: 2})
	check(t, []flow{
		{"C's new profile allows A", A.path, C.v4, "tcp", 7001, true},
		{"C's new profile: no any-udp", B.path, C.v4, "udp", 8005, false},
		{"C's new profile: nothing on IPv6", A.path, C.v6, "tcp", 7001, false},
	})
	chains, sets := tableContent(t, tp)
	if slices.Contains(chains, ingC.Name) || sets[setNet4]+sets[setNet6] != 0 || len(chains) != 4 || len(sets) != 4+6 {
		t.Errorf("after the move: chains %v, sets %v", chains, sets)
	}
	same("C moved", moved)

	// A no longer isolated: its profiles go, and the sets only they used.
	free := moved
	free.Pods = moved.Pods[1:]
	free.Profiles = []policy.Profile{ingC2}
	free.AddrSets = []policy.AddrSet{podsSet("pods4-00000000000a", A.v4)}
	free.PortSets = nil
	only("A free", free, policykernel.Stats{ElementsRemoved: 4, ChainsRemoved: 2, SetsRemoved: 5, Batches: 1})
	check(t, []flow{
		{"A free", C.path, A.v4, "tcp", 7001, true},
		{"A free egress", A.path, B.v4, "tcp", 7001, true},
		{"A free v6", B.path, A.v6, "udp", 7001, true},
		{"C still isolated", B.path, C.v4, "tcp", 7001, false},
	})
	same("A free", free)

	// Nothing left but the forward chain and the maps.
	only("everything removed", policy.Ruleset{Node: "n"}, policykernel.Stats{ElementsRemoved: 2, ChainsRemoved: 1, SetsRemoved: 1, Batches: 1})
	chains, sets = tableContent(t, tp)
	if !slices.Equal(chains, []string{"forward"}) || fmt.Sprint(sets) != fmt.Sprint(map[string]int{"egr4": 0, "egr6": 0, "ing4": 0, "ing6": 0}) {
		t.Errorf("left: chains %v, sets %v", chains, sets)
	}
	check(t, []flow{{"unrestricted", B.path, C.v4, "tcp", 7001, true}, {"unrestricted v6", B.path, C.v6, "tcp", 7000, true}})
	same("everything removed", policy.Ruleset{})
}

// Open(-1) binds the writer to the namespace of the thread that opened it,
// whatever thread Apply runs on later.
func TestOpenCallingThreadNamespace(t *testing.T) {
	tp := newTopo(t)
	A, _, C := tp.pods[0], tp.pods[1], tp.pods[2]
	var w *policykernel.Writer
	roottest.In(t, tp.node, func() error {
		var err error
		w, err = policykernel.Open(-1, nil)
		return err
	})
	defer w.Close()
	if _, err := w.Apply(baseRuleset(tp)); err != nil {
		t.Fatal(err)
	}
	if chains, _ := tableContent(t, tp); len(chains) != 4 {
		t.Errorf("chains in the node namespace: %v", chains)
	}
	check(t, []flow{{"programmed in the node namespace", C.path, A.v4, "tcp", 7001, false}})
}

// adoptsUnchanged opens a second writer and checks that it sees rs
// exactly as programmed (a zero difference).
func adoptsUnchanged(t *testing.T, tp *topo, rs policy.Ruleset, opts ...policykernel.Option) {
	t.Helper()
	w, err := policykernel.Open(tp.nodeFd, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if st, err := w.Apply(rs); err != nil || st.Changed() {
		t.Errorf("adopting writer: %+v, %v", st, err)
	}
}

// tableContent lists the table's chains and, per set, its element count.
func tableContent(t *testing.T, tp *topo) (chains []string, sets map[string]int) {
	t.Helper()
	c := tp.conn(t)
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: policykernel.TableName}
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range all {
		if ch.Table.Name == policykernel.TableName {
			chains = append(chains, ch.Name)
		}
	}
	slices.Sort(chains)
	ss, err := c.GetSets(tbl)
	if err != nil {
		t.Fatal(err)
	}
	sets = map[string]int{}
	for _, s := range ss {
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		sets[s.Name] = len(els)
	}
	return chains, sets
}

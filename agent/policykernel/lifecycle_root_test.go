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

func TestUpdateWhileTrafficFlows(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	rs := baseRuleset(tp)
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	// Flows the updates do not concern must never see a drop (nor a
	// pass where they should drop) while the updates land.
	stops := []func() (int, []error){
		background(flow{"unconcerned allowed flow", C.path, A.v4, "tcp", 7000, true}),
		background(flow{"unconcerned allowed flow v6", C.path, A.v6, "udp", 7000, true}),
		background(flow{"unconcerned denied flow", C.path, A.v4, "tcp", 7001, false}),
	}

	without := baseRuleset(tp)
	without.Pods[0].Ingress.Any4, without.Pods[0].Ingress.Any6 = nil, nil
	for round := range 3 {
		st, err := w.Apply(without)
		if err != nil {
			t.Fatal(err)
		}
		if st.ElementsRemoved != 2 || st.ElementsAdded != 0 || st.ChainsAdded+st.ChainsRemoved != 0 {
			t.Errorf("round %d: removing B: %+v", round, st)
		}
		check(t, []flow{
			{"removed peer", B.path, A.v4, "tcp", 7001, false},
			{"removed peer v6", B.path, A.v6, "udp", 7001, false},
			{"still allowed", A.path, B.v4, "tcp", 7000, true},
		})
		st, err = w.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		if st.ElementsAdded != 2 || st.ElementsRemoved != 0 {
			t.Errorf("round %d: adding B back: %+v", round, st)
		}
		check(t, []flow{
			{"peer back", B.path, A.v4, "tcp", 7001, true},
			{"peer back v6", B.path, A.v6, "udp", 7001, true},
		})
	}
	for _, stop := range stops {
		n, errs := stop()
		if n == 0 {
			t.Error("background prober never ran")
		}
		for _, err := range errs {
			t.Error(err)
		}
	}
}

func TestAdoption(t *testing.T) {
	tp := newTopo(t)
	A, _, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w1 := tp.open(t)
	rs := baseRuleset(tp)
	if _, err := w1.Apply(rs); err != nil {
		t.Fatal(err)
	}
	check(t, baseFlows(tp))
	before, err := w1.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	w1.Close()

	// A restarted agent: open while traffic flows; nothing changes
	// before, during or after its first Apply of the same ruleset.
	stop := background(flow{"denied during adoption", C.path, A.v4, "tcp", 7001, false})
	stop2 := background(flow{"allowed during adoption", C.path, A.v4, "tcp", 7000, true})
	w2 := tp.open(t)
	check(t, baseFlows(tp))
	st, err := w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st != (policykernel.Stats{Duration: st.Duration}) {
		t.Errorf("adopting Apply changed something: %+v", st)
	}
	for _, s := range []func() (int, []error){stop, stop2} {
		_, errs := s()
		for _, err := range errs {
			t.Error(err)
		}
	}
	check(t, baseFlows(tp))
	after, err := w2.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	// The counters kept counting: the chains were never recreated.
	for c, n := range before {
		if after[c] <= n {
			t.Errorf("chain %s: %d packets dropped before adoption, %d after", c, n, after[c])
		}
	}

	// And the adopted state is a real base for differences.
	rs.Pods = rs.Pods[:1]
	st, err = w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	// Its two map elements and its two ports boxes.
	if st.ChainsRemoved != 1 || st.SetsRemoved != 0 || st.ElementsRemoved != 4 || st.ChainsAdded != 0 {
		t.Errorf("removing C after adoption: %+v", st)
	}
	check(t, []flow{{"C unrestricted", A.path, C.v4, "tcp", 7000, false}, {"C unrestricted ingress", tp.pods[1].path, C.v4, "tcp", 7000, true}})
}

// tableContent lists the table's chains and, per set, its element count.
func tableContent(t *testing.T, tp *topo) (chains []string, sets map[string]int) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.nodeFd))
	if err != nil {
		t.Fatal(err)
	}
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

func TestRemoveEverything(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	if _, err := w.Apply(baseRuleset(tp)); err != nil {
		t.Fatal(err)
	}
	st, err := w.Apply(policy.Ruleset{Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	// The shared sets holding elements are made again empty.
	if st.ChainsRemoved != 3 || st.SetsRemoved != 6 || st.SetsAdded != 6 || st.ChainsAdded+st.ElementsAdded != 0 {
		t.Errorf("removing everything: %+v", st)
	}
	chains, sets := tableContent(t, tp)
	if !slices.Equal(chains, []string{"forward"}) {
		t.Errorf("chains left: %v", chains)
	}
	want := map[string]int{"ing4": 0, "ing6": 0, "egr4": 0, "egr6": 0}
	for _, d := range []string{"in-", "eg-"} {
		for _, k := range []string{"a4", "p4", "a6", "p6"} {
			want[d+k] = 0
		}
	}
	if fmt.Sprint(sets) != fmt.Sprint(want) {
		t.Errorf("sets left: %v", sets)
	}
	check(t, []flow{
		{"unrestricted", C.path, A.v4, "tcp", 7001, true},
		{"unrestricted egress", A.path, C.v4, "udp", 8005, true},
		{"unrestricted v6", B.path, C.v6, "tcp", 7000, true},
	})
	if st, err := w.Apply(policy.Ruleset{}); err != nil || st.Changed() {
		t.Errorf("empty again: %+v, %v", st, err)
	}
}

// A batch the kernel rejects changes nothing, and the writer learns what
// the kernel really has.
func TestFailedBatch(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	rs := baseRuleset(tp)
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	// Behind the writer's back: A's C-port-range box goes.
	c, err := nftables.New(nftables.WithNetNSFd(tp.nodeFd))
	if err != nil {
		t.Fatal(err)
	}
	p4 := &nftables.Set{Table: &nftables.Table{Family: nftables.TableFamilyINet, Name: policykernel.TableName}, Name: "in-p4"}
	key := func(port byte) []byte {
		return append(append(A.v4.AsSlice(), C.v4.AsSlice()...), 6, 0, 0, 0, 0x1f, port, 0, 0)
	}
	if err := c.SetDeleteElements(p4, []nftables.SetElement{{Key: key(0x40), KeyEnd: key(0x4a)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{{"box deleted behind the writer's back", C.path, A.v4, "tcp", 8005, false}})

	// The next ruleset drops that box (ENOENT: the batch fails) and B's
	// any-port access: neither may happen.
	rs2 := baseRuleset(tp)
	rs2.Pods[0].Ingress.Ports4 = rs2.Pods[0].Ingress.Ports4[:2]
	rs2.Pods[0].Ingress.Any4 = nil
	if _, err := w.Apply(rs2); err == nil {
		t.Fatal("apply deleting a missing element succeeded")
	} else {
		t.Logf("expected failure: %v", err)
	}
	check(t, []flow{{"failed batch left B allowed", B.path, A.v4, "tcp", 7001, true}})

	// Re-read: the same ruleset now applies, and the original puts the box back.
	if st, err := w.Apply(rs2); err != nil || st.ElementsRemoved != 1 || st.ElementsAdded != 0 {
		t.Fatalf("apply after re-read: %+v, %v", st, err)
	}
	check(t, []flow{{"B removed", B.path, A.v4, "tcp", 7001, false}})
	if st, err := w.Apply(rs); err != nil || st.ElementsAdded != 2 {
		t.Fatalf("restore: %+v, %v", st, err)
	}
	check(t, []flow{{"box back", C.path, A.v4, "tcp", 8005, true}, {"B back", B.path, A.v4, "tcp", 7001, true}})
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

// A table in the layout of the previous version (four sets per pod
// chain) is converted by the first Apply: a batch that makes and fills the
// shared sets, then one that rewrites the chains' rules to use them and
// deletes the old sets. No packet sees the pod unfiltered, nor an allowed
// peer dropped, and the old sets are gone after.
func TestMigrateOldLayout(t *testing.T) {
	tp := newTopo(t)
	A, _, C := tp.pods[0], tp.pods[1], tp.pods[2]
	rs := baseRuleset(tp)
	// Neighbours resolved first (over TCP, which retries a lost SYN): a
	// burst of first UDP packets while they are not sometimes loses one.
	var warm []flow
	for i, p := range tp.pods {
		warm = append(warm, flow{"warm-up", tp.node, p.v4, "tcp", 7000, true}, flow{"warm-up", tp.node, p.v6, "tcp", 7000, true})
		for j, q := range tp.pods {
			if i != j {
				warm = append(warm, flow{"warm-up", p.path, q.v4, "tcp", 7000, true}, flow{"warm-up", p.path, q.v6, "tcp", 7000, true})
			}
		}
	}
	check(t, warm)
	if err := policykernel.WriteOldLayout(tp.nodeFd, rs); err != nil {
		t.Fatal(err)
	}
	check(t, baseFlows(tp))
	_, old := tableContent(t, tp)
	if len(old) != 4+3*4 {
		t.Fatalf("old layout: sets %v", old)
	}

	stops := []func() (int, []error){
		background(flow{"denied during migration", C.path, A.v4, "tcp", 7001, false}),
		background(flow{"allowed during migration", C.path, A.v4, "tcp", 7000, true}),
		background(flow{"denied v6 during migration", C.path, A.v6, "tcp", 7001, false}),
		background(flow{"allowed egress during migration", A.path, tp.pods[1].v4, "udp", 7000, true}),
	}
	w := tp.open(t)
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	// Three chains' rules rewritten, twelve old sets for eight shared
	// ones, the maps untouched.
	if st.RulesAdded != 3*5 || st.SetsRemoved != 12 || st.SetsAdded != 8 || st.ChainsAdded+st.ChainsRemoved != 0 {
		t.Errorf("migration: %+v", st)
	}
	for _, stop := range stops {
		n, errs := stop()
		if n == 0 {
			t.Error("background prober never ran")
		}
		for _, err := range errs {
			t.Error(err)
		}
	}
	check(t, baseFlows(tp))
	chains, sets := tableContent(t, tp)
	if len(chains) != 4 || len(sets) != 4+8 {
		t.Errorf("after migration: chains %v, sets %v", chains, sets)
	}
	for name := range sets {
		if len(name) > len("in-a4") && name[:3] != "ing" && name[:3] != "egr" {
			t.Errorf("old set %s left", name)
		}
	}
	adoptsUnchanged(t, tp, rs)
	if st, err := w.Apply(rs); err != nil || st.Changed() {
		t.Errorf("after migration: %+v, %v", st, err)
	}
}

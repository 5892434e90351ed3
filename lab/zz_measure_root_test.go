package lab

import (
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
	"github.com/podnet/podnet/internal/roottest"
)

func TestZZMeasure(t *testing.T) {
	_, path := roottest.NewNS(t, "zz")
	ns, _ := vns.GetFromPath(path)
	defer ns.Close()
	w, err := policykernel.Open(int(ns), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cidr := netip.MustParsePrefix("10.86.0.0/16")
	o := genBenchObjects(cidr, nil, []string{"n1", "n2"}, 1000, 5000)
	pods := append(o.Pods, benchTestPod("client", "n1", netip.MustParseAddr("10.86.0.2")), benchTestPod("server", "n2", netip.MustParseAddr("10.86.1.2")))
	var ct, at []time.Duration
	for i := range 30 {
		pols := append(slices.Clone(o.Policies), flipPolicy(benchPortFlipA+i%2))
		ps := pods
		if false {
			np := benchTestPod("server", "n2", netip.MustParseAddr("10.86.1.3"))
			np.Name = "server2"
			ps = append(slices.Clone(pods), np)
		}
		t0 := time.Now()
		rs := policy.Compile(policy.ModelFromObjects(o.Namespaces, ps, pols), "n2")
		t1 := time.Now()
		st, err := w.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		ct = append(ct, t1.Sub(t0))
		at = append(at, time.Since(t1))
		if i < 3 || i == 29 {
			t.Logf("%d: compile %v apply %v %+v", i, t1.Sub(t0), time.Since(t1), st)
		}
	}
	slices.Sort(ct)
	slices.Sort(at)
	t.Logf("compile p50 %v max %v; apply p50 %v max %v", ct[15], ct[29], at[15], at[29])
}

func TestZZKernel(t *testing.T) {
	_, path := roottest.NewNS(t, "zk")
	ns, _ := vns.GetFromPath(path)
	defer ns.Close()
	w, err := policykernel.Open(int(ns), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cidr := netip.MustParsePrefix("10.86.0.0/16")
	o := genBenchObjects(cidr, nil, []string{"n1", "n2"}, 1000, 5000)
	rs := policy.Compile(policy.ModelFromObjects(o.Namespaces, o.Pods, o.Policies), "n2")
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tab := &nftables.Table{Name: "podnet-policy", Family: nftables.TableFamilyINet}
	set := &nftables.Set{Table: tab, Name: rs.AddrSets[0].Name, KeyType: nftables.TypeIPAddr}
	el := []nftables.SetElement{{Key: []byte{10, 99, 99, 99}}}
	timeit := func(what string, f func()) {
		var ds []time.Duration
		for range 10 {
			f()
			t0 := time.Now()
			if err := c.Flush(); err != nil {
				t.Fatal(what, err)
			}
			ds = append(ds, time.Since(t0))
		}
		t.Logf("%s: %v", what, ds)
	}
	i := 0
	timeit("set elem add/del", func() {
		if i%2 == 0 {
			c.SetAddElements(set, el)
		} else {
			c.SetDeleteElements(set, el)
		}
		i++
	})
	timeit("empty batch", func() {})
	chain := &nftables.Chain{Table: tab, Name: "zzchain"}
	i = 0
	timeit("chain add/del", func() {
		if i%2 == 0 {
			c.AddChain(chain)
		} else {
			c.DelChain(chain)
		}
		i++
	})
}

func TestZZKernel2(t *testing.T) {
	_, path := roottest.NewNS(t, "zk")
	ns, _ := vns.GetFromPath(path)
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tab := c.AddTable(&nftables.Table{Name: "zz", Family: nftables.TableFamilyINet})
	c1 := c.AddChain(&nftables.Chain{Table: tab, Name: "c1"})
	c2 := c.AddChain(&nftables.Chain{Table: tab, Name: "c2"})
	pc := c.AddChain(&nftables.Chain{Table: tab, Name: "pod"})
	set := &nftables.Set{Table: tab, Name: "s", KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(set, nil); err != nil {
		t.Fatal(err)
	}
	r := c.AddRule(&nftables.Rule{Table: tab, Chain: pc, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: "c1"}}})
	_ = r
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	rules, _ := c.GetRules(tab, pc)
	h := rules[0].Handle
	timeit := func(what string, f func(i int)) {
		var ds []time.Duration
		for i := range 10 {
			f(i)
			t0 := time.Now()
			if err := c.Flush(); err != nil {
				t.Fatal(what, err)
			}
			ds = append(ds, time.Since(t0))
		}
		t.Logf("%s: %v", what, ds)
	}
	timeit("rule replace", func(i int) {
		target := []string{"c2", "c1"}[i%2]
		c.ReplaceRule(&nftables.Rule{Table: tab, Chain: pc, Handle: h, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: target}}})
	})
	timeit("elem add/del (unreferenced set)", func(i int) {
		el := []nftables.SetElement{{Key: []byte{10, 99, 99, 99}}}
		if i%2 == 0 {
			c.SetAddElements(set, el)
		} else {
			c.SetDeleteElements(set, el)
		}
	})
	_ = c1
	_ = c2
}

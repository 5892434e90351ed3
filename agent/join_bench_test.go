package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
)

// simNodes is how many simulated nodes join in BenchmarkNodeJoin.
const simNodes = 50

// BenchmarkNodeJoin times node join -> route present on every other node:
// three real agents (vxlan, in node namespaces) watch etcd while 50
// simulated nodes join — datastore entries only: each leases a subnet and
// publishes an underlay address and VTEP MAC exactly as an agent does. A
// join is timed from the moment its Publish returns to the moment the
// route to its subnet is in the kernel of all three real nodes.
//
// Two patterns: one at a time (each join waits for the previous one to be
// everywhere: the latency of a single join) and all 50 at once (a
// cluster-wide restart or scale-up: time from the start of the burst —
// 50 clients connecting, leasing and publishing — until the last route of
// the burst is everywhere). Run with -benchtime=1x; metrics are
// milliseconds.
func BenchmarkNodeJoin(b *testing.B) {
	c := newCluster(b, "vxlan")
	c.quiet = true
	real := []*node{c.addNode("a", 0, 1), c.addNode("b", 0, 2), c.addNode("c", 1, 3)}
	for _, n := range real {
		waitState(b, n)
	}
	ctx := context.Background()
	var single, burst []time.Duration
	for round := 0; round < b.N; round++ {
		// One at a time.
		for i := range simNodes {
			st, sub, at := joinSim(b, ctx, c, fmt.Sprintf("s%d-%d", round, i), i)
			single = append(single, waitRoutes(b, real, sub, at))
			st.Revoke(ctx)
			st.Close()
		}
		waitGone(b, real)
		// All at once.
		stores := make([]*etcd.Store, simNodes)
		subs := make([]netip.Prefix, simNodes)
		ats := make([]time.Time, simNodes)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range simNodes {
			wg.Go(func() {
				stores[i], subs[i], ats[i] = joinSim(b, ctx, c, fmt.Sprintf("p%d-%d", round, i), i)
			})
		}
		wg.Wait()
		last := time.Duration(0)
		for i := range simNodes {
			if d := waitRoutes(b, real, subs[i], start); d > last {
				last = d
			}
		}
		burst = append(burst, last)
		for _, st := range stores {
			st.Revoke(ctx)
			st.Close()
		}
		waitGone(b, real)
	}
	slices.Sort(single)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(single[len(single)/2]), "join-p50-ms")
	b.ReportMetric(ms(single[len(single)*95/100]), "join-p95-ms")
	b.ReportMetric(ms(single[len(single)-1]), "join-max-ms")
	b.ReportMetric(ms(slices.Max(burst)), "burst50-all-routes-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d single joins: p50 %s p95 %s max %s; %d nodes at once: all routes on all %d nodes after %s",
		len(single), single[len(single)/2], single[len(single)*95/100], single[len(single)-1], simNodes, len(real), slices.Max(burst))
}

// joinSim makes simulated node name join: lease a subnet and publish a
// record as an agent would (underlay address 100.64.2.x, which no real
// node uses, a made-up VTEP MAC). It returns the store (holding the lease),
// the subnet, and when Publish returned.
func joinSim(b testing.TB, ctx context.Context, c *cluster, name string, i int) (*etcd.Store, netip.Prefix, time.Time) {
	st, err := etcd.New(ctx, etcd.Options{Endpoints: c.eps, TTL: 30 * time.Second})
	must(b, err)
	l, err := st.Lease(ctx, datastore.LeaseRequest{Node: name, Pools: []datastore.Pool{{CIDR: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24}}})
	must(b, err)
	must(b, st.Publish(ctx, datastore.NodeInfo{
		Name:        name,
		UnderlayIPs: []netip.Addr{netip.AddrFrom4([4]byte{100, 64, 2, byte(10 + i)})},
		VtepMAC:     fmt.Sprintf("02:50:00:00:%02x:%02x", i/256, i%256),
		Subnets:     l.Subnets,
		Backend:     "vxlan",
	}))
	return st, l.Subnets[0], time.Now()
}

// waitRoutes polls (every 500µs) until every node has a route to sub and
// returns the time since from.
func waitRoutes(b testing.TB, nodes []*node, sub netip.Prefix, from time.Time) time.Duration {
	deadline := from.Add(30 * time.Second)
	for {
		all := true
		for _, n := range nodes {
			if _, ok := routesOf(b, n)[sub.String()]; !ok {
				all = false
				break
			}
		}
		if all {
			return time.Since(from)
		}
		if time.Now().After(deadline) {
			b.Fatalf("route to %s not on all nodes after 30s", sub)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// waitGone waits until the real nodes route only to each other again.
func waitGone(b testing.TB, nodes []*node) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		most := 0
		for _, n := range nodes {
			most = max(most, len(routesOf(b, n)))
		}
		if most <= len(nodes)-1 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("simulated nodes' routes still present after 30s (%d)", most)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

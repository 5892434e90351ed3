package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
)

var (
	pool4 = datastore.Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24}
	pool6 = datastore.Pool{CIDR: netip.MustParsePrefix("fd00:244::/48"), SubnetLen: 64}
)

func startEtcd(t *testing.T) []string {
	t.Helper()
	e, err := embedded.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e.Endpoints()
}

func newStore(t *testing.T, eps []string, ttl time.Duration) *etcd.Store {
	t.Helper()
	s, err := etcd.New(context.Background(), etcd.Options{Endpoints: eps, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTwoNodesDistinctSubnetsAndRestart(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	a, b := newStore(t, eps, 0), newStore(t, eps, 0)
	la, err := a.Lease(ctx, datastore.LeaseRequest{Node: "a", Pools: []datastore.Pool{pool4, pool6}})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Lease(ctx, datastore.LeaseRequest{Node: "b", Pools: []datastore.Pool{pool4, pool6}})
	if err != nil {
		t.Fatal(err)
	}
	if len(la.Subnets) != 2 || len(lb.Subnets) != 2 {
		t.Fatalf("want 2 subnets each: %v %v", la.Subnets, lb.Subnets)
	}
	for i := range 2 {
		if la.Subnets[i] == lb.Subnets[i] {
			t.Fatalf("a and b share %s", la.Subnets[i])
		}
	}
	if !pool4.CIDR.Contains(la.Subnets[0].Addr()) || la.Subnets[0].Bits() != 24 || la.Subnets[1].Bits() != 64 {
		t.Fatalf("bad subnets %v", la.Subnets)
	}
	// Restart of a (new client, old lease still alive): same subnets.
	a.Close()
	a2 := newStore(t, eps, 0)
	la2, err := a2.Lease(ctx, datastore.LeaseRequest{Node: "a", Pools: []datastore.Pool{pool4, pool6}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(la2.Subnets) != fmt.Sprint(la.Subnets) {
		t.Fatalf("restart changed subnets: %v -> %v", la.Subnets, la2.Subnets)
	}
	// Preferred subnet is honoured when free.
	c := newStore(t, eps, 0)
	want := netip.MustParsePrefix("10.244.77.0/24")
	lc, err := c.Lease(ctx, datastore.LeaseRequest{Node: "c", Pools: []datastore.Pool{pool4}, Preferred: []netip.Prefix{want}})
	if err != nil || lc.Subnets[0] != want {
		t.Fatalf("preferred: %v %v", lc, err)
	}
	// Publish and List.
	ni := datastore.NodeInfo{Name: "a", UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, VtepMAC: "02:00:00:00:00:01", Subnets: la2.Subnets, Backend: "vxlan"}
	if err := a2.Publish(ctx, ni); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, datastore.NodeInfo{Name: "a"}); err == nil {
		t.Fatal("b published for a")
	}
	snap, err := b.List(ctx)
	if err != nil || len(snap.Nodes) != 1 || fmt.Sprint(snap.Nodes[0]) != fmt.Sprint(ni) || len(snap.Bad) != 0 {
		t.Fatalf("list: %+v %v", snap, err)
	}
	// The owners are the lease keys: a and b hold a v4 and a v6 subnet, c a v4 one.
	if len(snap.Owners) != 5 || snap.Owners[la2.Subnets[0]] != "a" || snap.Owners[want] != "c" {
		t.Fatalf("owners: %v", snap.Owners)
	}
}

func TestExhaustion(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	small := datastore.Pool{CIDR: netip.MustParsePrefix("10.9.0.0/23"), SubnetLen: 24}
	for _, n := range []string{"n1", "n2"} {
		if _, err := newStore(t, eps, 0).Lease(ctx, datastore.LeaseRequest{Node: n, Pools: []datastore.Pool{small}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := newStore(t, eps, 0).Lease(ctx, datastore.LeaseRequest{Node: "n3", Pools: []datastore.Pool{small}})
	if !errors.Is(err, datastore.ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
	t.Log(err)
	if want := "10.9.0.0/23 has no free /24 subnet left"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q lacks %q", err, want)
	}
}

func TestConcurrentLeasesNeverCollide(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	// 16 subnets, 10 nodes: names hash to colliding start points often.
	p := datastore.Pool{CIDR: netip.MustParsePrefix("10.8.0.0/20"), SubnetLen: 24}
	var wg sync.WaitGroup
	got := make([]netip.Prefix, 10)
	errs := make([]error, 10)
	for i := range 10 {
		s := newStore(t, eps, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.Lease(ctx, datastore.LeaseRequest{Node: fmt.Sprintf("node-%d", i), Pools: []datastore.Pool{p}})
			if err != nil {
				errs[i] = err
				return
			}
			got[i] = l.Subnets[0]
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, s := range got {
		if errs[i] != nil {
			t.Fatalf("node-%d: %v", i, errs[i])
		}
		if j, dup := seen[s]; dup {
			t.Fatalf("node-%d and node-%d both hold %s", i, j, s)
		}
		seen[s] = i
	}
	// The store agrees: exactly 10 subnet keys, one per node.
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r, err := cli.Get(ctx, etcd.DefaultPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 10 {
		t.Fatalf("want 10 subnet keys, got %d (%v)", len(r.Kvs), err)
	}
}

func TestKeysVanishAfterLeaseExpiry(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	s := newStore(t, eps, 2*time.Second)
	l, err := s.Lease(ctx, datastore.LeaseRequest{Node: "gone", Pools: []datastore.Pool{pool4}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, datastore.NodeInfo{Name: "gone", Subnets: l.Subnets}); err != nil {
		t.Fatal(err)
	}
	obs := newStore(t, eps, 0)
	if n, _ := obs.List(ctx); len(n.Nodes) != 1 {
		t.Fatalf("want 1 node, got %v", n)
	}
	s.Close() // the agent dies: no more keepalives, nothing revoked
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, _ := obs.List(ctx)
		if len(n.Nodes) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node record still there after TTL: %v", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Its subnet is free again: another node can take it as preferred.
	l2, err := obs.Lease(ctx, datastore.LeaseRequest{Node: "new", Pools: []datastore.Pool{pool4}, Preferred: l.Subnets})
	if err != nil || l2.Subnets[0] != l.Subnets[0] {
		t.Fatalf("subnet %s not free after expiry: %v %v", l.Subnets[0], l2, err)
	}
}

func TestWatchAddRemove(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	obs := newStore(t, eps, 0)
	ch, err := obs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t, eps, 3*time.Second) // loss is noticed at the next keepalive, TTL/3
	l, err := s.Lease(ctx, datastore.LeaseRequest{Node: "w", Pools: []datastore.Pool{pool4}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, datastore.NodeInfo{Name: "w", Subnets: l.Subnets}); err != nil {
		t.Fatal(err)
	}
	next := func() datastore.Event {
		select {
		case ev := <-ch:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event")
		}
		return datastore.Event{}
	}
	if ev := next(); ev.Type != datastore.Put || ev.Name != "w" || ev.Node == nil || ev.Node.Subnets[0] != l.Subnets[0] {
		t.Fatalf("want put w, got %+v", ev)
	}
	if err := s.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != datastore.Delete || ev.Name != "w" {
		t.Fatalf("want delete w, got %+v", ev)
	}
	select {
	case <-l.Expired:
	case <-time.After(10 * time.Second):
		t.Fatal("Lease.Expired not closed after the lease was revoked")
	}
}

func TestNthSubnet(t *testing.T) {
	for _, c := range []struct {
		cidr string
		bits int
		i    int
		want string
	}{
		{"10.244.0.0/16", 24, 0, "10.244.0.0/24"},
		{"10.244.0.0/16", 24, 255, "10.244.255.0/24"},
		{"10.244.0.0/16", 26, 5, "10.244.1.64/26"},
		{"fd00:244::/48", 64, 3, "fd00:244:0:3::/64"},
	} {
		if got := etcd.NthSubnet(netip.MustParsePrefix(c.cidr), c.bits, c.i).String(); got != c.want {
			t.Errorf("NthSubnet(%s,%d,%d)=%s want %s", c.cidr, c.bits, c.i, got, c.want)
		}
	}
}

// TestBadRecordsReported: records that cannot be used (not JSON, over the
// size bound, naming another node than their key, a malformed subnet key)
// are reported in Snapshot.Bad and hide none of the good records; List
// does not fail for them (issue 17: one bad record stopped every agent's
// self-repair).
func TestBadRecordsReported(t *testing.T) {
	eps := startEtcd(t)
	ctx := ctxT(t)
	s := newStore(t, eps, 0)
	l, err := s.Lease(ctx, datastore.LeaseRequest{Node: "good", Pools: []datastore.Pool{pool4}})
	if err != nil {
		t.Fatal(err)
	}
	good := datastore.NodeInfo{Name: "good", UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, Subnets: l.Subnets}
	if err := s.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	big := `{"name":"big","underlayIPs":["` + strings.Repeat("1", datastore.MaxRecordBytes) + `"]}`
	for k, v := range map[string]string{
		"nodes/badjson":  `{"name":`,
		"nodes/big":      big,
		"nodes/impostor": `{"name":"good","underlayIPs":["100.64.0.9"],"subnets":["10.244.9.0/24"]}`,
		"subnets/junk":   "x",
	} {
		if _, err := cli.Put(ctx, etcd.DefaultPrefix+"/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List failed for bad records: %v", err)
	}
	if len(snap.Nodes) != 1 || snap.Nodes[0].Name != "good" || snap.Owners[l.Subnets[0]] != "good" {
		t.Fatalf("good record hidden: %+v", snap)
	}
	var keys []string
	for _, b := range snap.Bad {
		keys = append(keys, strings.TrimPrefix(b.Key, etcd.DefaultPrefix+"/"))
		t.Log(b)
	}
	if strings.Join(keys, " ") != "nodes/badjson nodes/big nodes/impostor subnets/junk" {
		t.Fatalf("bad records %v", keys)
	}
}

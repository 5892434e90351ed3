// Package etcd is the etcd implementation of the agent's datastore.
//
// Keys (Prefix defaults to /podnet/v1):
//
//	<prefix>/subnets/<addr>-<len>  -> node name   (e.g. /podnet/v1/subnets/10.244.3.0-24)
//	<prefix>/nodes/<name>          -> JSON datastore.NodeInfo
//	<prefix>/objects/...           -> Kubernetes objects policy reads (objects.go:
//	                                  ObjectSource reads them, PutObject writes them)
//
// All of a node's keys hang off one etcd lease with a TTL that this process
// renews (KeepAlive). A subnet is taken with a create-if-absent transaction,
// so two nodes can never hold the same one; a node that restarts finds its
// subnet by its name first and moves it onto its new lease. When an agent
// dies its keys vanish one TTL later and the subnet is free again. Close
// stops renewing but does not revoke, so a quick restart keeps the subnet;
// Revoke is the explicit "this node leaves" call.
package etcd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/podnet/podnet/agent/datastore"
)

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "/podnet/v1"

// DefaultTTL is the lease TTL when Options.TTL is zero.
const DefaultTTL = 60 * time.Second

// maxCandidates bounds the subnets a pool is searched for (config
// validation keeps pools at or below this).
const maxCandidates = 1 << 20

// Options configures New.
type Options struct {
	Endpoints   []string
	TLS         *tls.Config
	Prefix      string
	TTL         time.Duration
	DialTimeout time.Duration
	// Client, if set, is used instead of dialing Endpoints; Close then
	// leaves it open.
	Client *clientv3.Client
}

// Store is a datastore.Store on etcd.
type Store struct {
	cli     *clientv3.Client
	ownCli  bool
	prefix  string
	ttl     time.Duration
	ctx     context.Context // lives until Close; keepalives run under it
	cancel  context.CancelFunc
	mu      sync.Mutex
	leaseID clientv3.LeaseID
	kaStop  context.CancelFunc // stops the current lease's keepalive
	node    string
}

var _ datastore.Store = (*Store)(nil)

// New connects to etcd.
func New(ctx context.Context, o Options) (*Store, error) {
	s := &Store{cli: o.Client, prefix: strings.TrimRight(o.Prefix, "/"), ttl: o.TTL}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.ttl < 2*time.Second {
		return nil, fmt.Errorf("etcd: lease TTL %s is below the 2s minimum", s.ttl)
	}
	if s.cli == nil {
		if len(o.Endpoints) == 0 {
			return nil, errors.New("etcd: no endpoints: set --etcd-endpoints")
		}
		dt := o.DialTimeout
		if dt == 0 {
			dt = 5 * time.Second
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   o.Endpoints,
			TLS:         o.TLS,
			DialTimeout: dt,
			Context:     ctx,
			Logger:      nopLogger(),
			// gRPC's default reconnect backoff grows to 120 s: after a
			// 30 s etcd outage an agent could stay disconnected for
			// another 15-20 s, long enough for its old lease (revived for
			// one TTL when etcd restarts) to expire and take its record
			// with it before the re-lease got through.
			DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: dt,
			})},
		})
		if err != nil {
			return nil, fmt.Errorf("etcd: connect %v: %w", o.Endpoints, err)
		}
		s.cli, s.ownCli = cli, true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func (s *Store) subnetsPrefix() string { return s.prefix + "/subnets/" }
func (s *Store) nodesPrefix() string   { return s.prefix + "/nodes/" }

// SubnetKey is the key that records who holds subnet p.
func (s *Store) SubnetKey(p netip.Prefix) string {
	return s.subnetsPrefix() + p.Addr().String() + "-" + fmt.Sprint(p.Bits())
}

// NodeKey is the key of node's NodeInfo.
func (s *Store) NodeKey(node string) string { return s.nodesPrefix() + node }

func parseSubnetKey(k string) (netip.Prefix, bool) {
	i := strings.LastIndexByte(k, '-')
	if i < 0 {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(k[:i] + "/" + k[i+1:])
	return p, err == nil
}

// grant makes a fresh etcd lease kept alive until Close and returns it with
// a channel closed when keepalive stops for any reason other than Close.
func (s *Store) grant(ctx context.Context) (clientv3.LeaseID, <-chan struct{}, error) {
	g, err := s.cli.Grant(ctx, int64(s.ttl/time.Second))
	if err != nil {
		return 0, nil, fmt.Errorf("etcd: grant lease: %w", err)
	}
	kctx, stop := context.WithCancel(s.ctx)
	ka, err := s.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		stop()
		return 0, nil, fmt.Errorf("etcd: keep lease alive: %w", err)
	}
	expired := make(chan struct{})
	go func() {
		for range ka {
		}
		if kctx.Err() == nil {
			close(expired)
		}
	}()
	s.mu.Lock()
	if s.kaStop != nil {
		// The previous lease's keys move to the new one; let it lapse.
		s.kaStop()
	}
	s.kaStop = stop
	s.mu.Unlock()
	return g.ID, expired, nil
}

// Lease implements datastore.Store.
func (s *Store) Lease(ctx context.Context, req datastore.LeaseRequest) (*datastore.Lease, error) {
	if req.Node == "" || strings.Contains(req.Node, "/") {
		return nil, fmt.Errorf("etcd: invalid node name %q", req.Node)
	}
	id, expired, err := s.grant(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.leaseID, s.node = id, req.Node
	s.mu.Unlock()

	resp, err := s.cli.Get(ctx, s.subnetsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd: list subnets: %w", err)
	}
	taken := map[netip.Prefix]string{}
	for _, kv := range resp.Kvs {
		if p, ok := parseSubnetKey(strings.TrimPrefix(string(kv.Key), s.subnetsPrefix())); ok {
			taken[p] = string(kv.Value)
		}
	}
	lease := &datastore.Lease{Node: req.Node, Expired: expired}
	for _, pool := range req.Pools {
		sub, err := s.leaseOne(ctx, id, req, pool, taken)
		if err != nil {
			return nil, err
		}
		taken[sub] = req.Node
		lease.Subnets = append(lease.Subnets, sub)
	}
	return lease, nil
}

func (s *Store) leaseOne(ctx context.Context, id clientv3.LeaseID, req datastore.LeaseRequest, pool datastore.Pool, taken map[netip.Prefix]string) (netip.Prefix, error) {
	fits := func(p netip.Prefix) bool {
		return p.Bits() == pool.SubnetLen && pool.CIDR.Contains(p.Addr()) && p.Masked() == p
	}
	// 1. Ours already (restart within the TTL): move it onto the new lease.
	var mine []netip.Prefix
	for p, owner := range taken {
		if owner == req.Node && fits(p) {
			mine = append(mine, p)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Addr().Less(mine[j].Addr()) })
	for _, p := range mine {
		k := s.SubnetKey(p)
		r, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Value(k), "=", req.Node)).
			Then(clientv3.OpPut(k, req.Node, clientv3.WithLease(id))).Commit()
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("etcd: renew subnet %s: %w", p, err)
		}
		if r.Succeeded {
			return p, nil
		}
	}
	// 2. Preferred (from the node's own state file), then 3. any free one,
	// starting at a spot derived from the node name so concurrent joiners
	// rarely race for the same key.
	create := func(p netip.Prefix) (bool, error) {
		k := s.SubnetKey(p)
		r, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, req.Node, clientv3.WithLease(id))).Commit()
		if err != nil {
			return false, fmt.Errorf("etcd: lease subnet %s: %w", p, err)
		}
		if !r.Succeeded {
			taken[p] = "?"
		}
		return r.Succeeded, nil
	}
	for _, p := range req.Preferred {
		if _, busy := taken[p]; busy || !fits(p) {
			continue
		}
		if ok, err := create(p); err != nil || ok {
			return p, err
		}
	}
	n := 1 << (pool.SubnetLen - pool.CIDR.Bits())
	if pool.SubnetLen-pool.CIDR.Bits() > 20 || pool.SubnetLen-pool.CIDR.Bits() < 0 {
		n = maxCandidates
	}
	h := fnv.New32a()
	h.Write([]byte(req.Node))
	start := int(h.Sum32() % uint32(n))
	for i := range n {
		p := NthSubnet(pool.CIDR, pool.SubnetLen, (start+i)%n)
		if _, busy := taken[p]; busy {
			continue
		}
		if ok, err := create(p); err != nil || ok {
			return p, err
		}
	}
	return netip.Prefix{}, fmt.Errorf("etcd: cluster CIDR %s has no free /%d subnet left for node %q (all %d are leased): %w",
		pool.CIDR, pool.SubnetLen, req.Node, n, datastore.ErrExhausted)
}

// NthSubnet returns the i-th /bits subnet of cidr.
func NthSubnet(cidr netip.Prefix, bits, i int) netip.Prefix {
	a := cidr.Masked().Addr()
	b := a.AsSlice()
	v := new(big.Int).SetBytes(b)
	off := new(big.Int).Lsh(big.NewInt(int64(i)), uint(len(b)*8-bits))
	v.Add(v, off)
	out := v.FillBytes(make([]byte, len(b)))
	na, _ := netip.AddrFromSlice(out)
	return netip.PrefixFrom(na, bits)
}

// Publish implements datastore.Store.
func (s *Store) Publish(ctx context.Context, info datastore.NodeInfo) error {
	s.mu.Lock()
	id, node := s.leaseID, s.node
	s.mu.Unlock()
	if id == 0 {
		return datastore.ErrNoLease
	}
	if info.Name != node {
		return fmt.Errorf("etcd: publish for node %q under the lease of node %q", info.Name, node)
	}
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.NodeKey(info.Name), string(b), clientv3.WithLease(id)); err != nil {
		return fmt.Errorf("etcd: publish node %q: %w", info.Name, err)
	}
	return nil
}

// List implements datastore.Store: the node records and the subnet lease
// keys are read in one transaction, so they are from the same revision.
func (s *Store) List(ctx context.Context) (datastore.Snapshot, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.nodesPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(s.subnetsPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return datastore.Snapshot{}, fmt.Errorf("etcd: list nodes: %w", err)
	}
	snap := datastore.Snapshot{Owners: map[netip.Prefix]string{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		ni, bad := s.decodeNode(kv.Key, kv.Value)
		if bad != "" {
			snap.Bad = append(snap.Bad, datastore.BadRecord{Key: string(kv.Key), Reason: bad})
			continue
		}
		snap.Nodes = append(snap.Nodes, ni)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		p, ok := parseSubnetKey(strings.TrimPrefix(string(kv.Key), s.subnetsPrefix()))
		if !ok || p != p.Masked() {
			snap.Bad = append(snap.Bad, datastore.BadRecord{Key: string(kv.Key), Reason: "not a subnet key (<addr>-<len>, the network address)"})
			continue
		}
		snap.Owners[p] = string(kv.Value)
	}
	sort.Slice(snap.Nodes, func(i, j int) bool { return snap.Nodes[i].Name < snap.Nodes[j].Name })
	return snap, nil
}

// decodeNode reads one node record, or says why it cannot be used: too
// large, not a record, or naming another node than its key does (a record
// can only speak for the node its key names).
func (s *Store) decodeNode(key, val []byte) (datastore.NodeInfo, string) {
	var ni datastore.NodeInfo
	if len(val) > datastore.MaxRecordBytes {
		return ni, fmt.Sprintf("record is %d bytes, over the %d-byte limit", len(val), datastore.MaxRecordBytes)
	}
	if err := json.Unmarshal(val, &ni); err != nil {
		return ni, fmt.Sprintf("not a node record: %v", err)
	}
	if name := strings.TrimPrefix(string(key), s.nodesPrefix()); ni.Name != name {
		return ni, fmt.Sprintf("record names node %q, its key node %q", ni.Name, name)
	}
	return ni, ""
}

// Watch implements datastore.Store. A compacted or broken watch is restarted
// and announced with a Resync event.
func (s *Store) Watch(ctx context.Context) (<-chan datastore.Event, error) {
	out := make(chan datastore.Event, 64)
	send := func(ev datastore.Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(out)
		var rev int64
		for ctx.Err() == nil {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev+1))
			}
			wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.nodesPrefix(), opts...)
			for wr := range wch {
				if err := wr.Err(); err != nil {
					if wr.CompactRevision > 0 {
						rev = 0
					}
					break
				}
				for _, e := range wr.Events {
					rev = e.Kv.ModRevision
					name := strings.TrimPrefix(string(e.Kv.Key), s.nodesPrefix())
					ev := datastore.Event{Type: datastore.Delete, Name: name}
					if e.Type == clientv3.EventTypePut {
						// A record that cannot be used is, to the
						// watcher, gone (List reports why).
						if ni, bad := s.decodeNode(e.Kv.Key, e.Kv.Value); bad == "" {
							ev = datastore.Event{Type: datastore.Put, Name: name, Node: &ni}
						}
					}
					if !send(ev) {
						return
					}
				}
			}
			if ctx.Err() != nil {
				return
			}
			if !send(datastore.Event{Type: datastore.Resync}) {
				return
			}
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Revoke releases the lease now: this node's subnet and record vanish.
func (s *Store) Revoke(ctx context.Context) error {
	s.mu.Lock()
	id := s.leaseID
	s.leaseID = 0
	s.mu.Unlock()
	if id == 0 {
		return nil
	}
	_, err := s.cli.Revoke(ctx, id)
	return err
}

// Close implements datastore.Store.
func (s *Store) Close() error {
	s.cancel()
	if s.ownCli {
		return s.cli.Close()
	}
	return nil
}

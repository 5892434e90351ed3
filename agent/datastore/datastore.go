// Package datastore is the node agent's one small interface to the cluster
// store: lease a pod subnet per address family for this node, publish how to
// reach it (underlay addresses, VTEP MAC), and list and watch every node's
// record; and keep a watched copy of the Kubernetes objects network policy
// reads (ObjectSource), with the checks a writer of those objects runs
// (Validate*). Implementations (etcd/, kubernetes/) own their keys and
// transactions; nothing here touches the kernel, and nothing that uses a
// Store knows which one it has.
package datastore

import (
	"context"
	"errors"
	"net/netip"
)

// ErrExhausted is wrapped by Lease when a cluster CIDR has no free subnet.
var ErrExhausted = errors.New("no free subnet")

// ErrNoLease is returned by Publish before a successful Lease.
var ErrNoLease = errors.New("publish before lease: call Lease first")

// Pool is one address family's cluster CIDR and the prefix length of the
// per-node subnets carved out of it.
type Pool struct {
	CIDR      netip.Prefix
	SubnetLen int
}

// LeaseRequest asks for one subnet from each pool for node.
type LeaseRequest struct {
	Node  string
	Pools []Pool
	// Preferred subnets (e.g. from the node state file of a previous run)
	// are taken if they are free; a subnet the store already records for
	// Node always wins.
	Preferred []netip.Prefix
}

// Lease is the outcome of a LeaseRequest: one subnet per pool, in pool
// order, held while the store keeps the lease alive.
type Lease struct {
	Node    string
	Subnets []netip.Prefix
	// Expired is closed when the store lost the lease (its keys may be
	// gone or taken): the caller leases and publishes again.
	Expired <-chan struct{}
}

// NodeInfo is what one node publishes about itself.
type NodeInfo struct {
	Name        string         `json:"name"`
	UnderlayIPs []netip.Addr   `json:"underlayIPs"`
	VtepMAC     string         `json:"vtepMAC,omitempty"`
	Subnets     []netip.Prefix `json:"subnets"`
	Backend     string         `json:"backend"`
}

// MaxRecordBytes bounds one encoded node record: a legitimate record is a
// few hundred bytes; a larger one is refused unread (Snapshot.Bad), so no
// record can make every node's kernel update fail by its size alone.
const MaxRecordBytes = 16 << 10

// BadRecord is a record the store holds but could not read, and why.
type BadRecord struct {
	Key    string
	Reason string
}

func (b BadRecord) String() string { return b.Key + ": " + b.Reason }

// Snapshot is the cluster as one read of the store saw it.
type Snapshot struct {
	// Nodes are the records that decoded, sorted by name. They are claims:
	// the agent authorises each field (agent/overlay.Authorise) before it
	// programs anything from them.
	Nodes []NodeInfo
	// Owners maps every leased subnet to the node holding its lease: the
	// authority on which subnets a record may claim. etcd: the
	// <prefix>/subnets/ keys; Kubernetes: each Node's spec.podCIDRs.
	Owners map[netip.Prefix]string
	// Bad are records that could not be decoded (too large, not JSON, a
	// name other than their key's). They are skipped, never fatal: the
	// rest of the snapshot is used as it is.
	Bad []BadRecord
}

// SnapshotOf is the snapshot of records whose own subnets are authoritative
// (the first record by name to claim a subnet owns it): the Kubernetes
// store, whose subnets are spec.podCIDRs, and tests.
func SnapshotOf(nodes []NodeInfo) Snapshot {
	s := Snapshot{Nodes: nodes, Owners: map[netip.Prefix]string{}}
	for _, n := range nodes {
		for _, p := range n.Subnets {
			if _, taken := s.Owners[p]; !taken {
				s.Owners[p] = n.Name
			}
		}
	}
	return s
}

// Node returns the record of node name, if the snapshot has one.
func (s Snapshot) Node(name string) (NodeInfo, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeInfo{}, false
}

// EventType says what happened to a node record.
type EventType int

const (
	// Put: a node record was created or changed.
	Put EventType = iota
	// Delete: a node record was removed (or its lease expired).
	Delete
	// Resync: the watch was restarted and events may have been missed;
	// the receiver re-lists.
	Resync
)

func (t EventType) String() string {
	switch t {
	case Put:
		return "put"
	case Delete:
		return "delete"
	default:
		return "resync"
	}
}

// Event is one change delivered by Watch. Node is nil for Delete and
// Resync.
type Event struct {
	Type EventType
	Name string
	Node *NodeInfo
}

// Store is implemented by each datastore.
type Store interface {
	// Lease gets (or gets back) this node's subnets and keeps them alive
	// until Close or until the store loses them (Lease.Expired).
	Lease(ctx context.Context, req LeaseRequest) (*Lease, error)
	// Publish records info under the current lease.
	Publish(ctx context.Context, info NodeInfo) error
	// List reads every published node and the subnet owners at one
	// moment. Records it cannot decode are in Snapshot.Bad; the error is
	// only for a store that could not be read at all.
	List(ctx context.Context) (Snapshot, error)
	// Watch delivers node changes until ctx is done, then closes the
	// channel.
	Watch(ctx context.Context) (<-chan Event, error)
	// Close stops keeping the lease alive without releasing it, so a
	// restarted agent gets its subnet back, and frees the client.
	Close() error
}

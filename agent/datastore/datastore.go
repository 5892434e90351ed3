// Package datastore is the node agent's one small interface to the cluster
// store: lease a pod subnet per address family for this node, publish how to
// reach it (underlay addresses, VTEP MAC), and list and watch every node's
// record. Implementations (etcd/, later kubernetes/) own their keys and
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
	// List returns every published node, sorted by name.
	List(ctx context.Context) ([]NodeInfo, error)
	// Watch delivers node changes until ctx is done, then closes the
	// channel.
	Watch(ctx context.Context) (<-chan Event, error)
	// Close stops keeping the lease alive without releasing it, so a
	// restarted agent gets its subnet back, and frees the client.
	Close() error
}

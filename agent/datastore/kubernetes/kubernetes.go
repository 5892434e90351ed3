// Package kubernetes is the Kubernetes implementation of the agent's
// datastore: the cluster's Node objects are the records, as in Flannel's
// kube subnet manager.
//
//   - A node's subnets are its spec.podCIDRs, allocated by
//     kube-controller-manager (--allocate-node-cidrs, --cluster-cidr) or set
//     by whoever creates the Node. Lease waits, logging why, until the
//     node's Node object exists and has them; podnet never allocates. Each
//     requested pool (cluster CIDR) must contain the node's pod CIDR of its
//     family.
//   - Publish writes the node's underlay addresses, VTEP MAC and backend as
//     annotations (podnet.io/underlay-ips, podnet.io/vtep-mac,
//     podnet.io/backend) with one JSON merge patch, and clears the node's
//     NetworkUnavailable condition (status False, reason PodnetIsUp) with a
//     status patch.
//   - List and Watch read one client-go shared informer on Nodes: a node
//     is a record once it has pod CIDRs and the podnet.io/underlay-ips
//     annotation. Watch delivers Put when a record appears or changes (not
//     on every kubelet status update) and Delete when the Node is deleted
//     or loses its annotations.
//   - The "lease" is the Node object itself: Lease.Expired is closed when
//     the Node is deleted or its pod CIDRs change (the agent then leases
//     again, i.e. waits for the Node to return). Close stops the informer
//     and leaves the annotations in place.
//   - ObjectSource (objects.go) keeps informers on Pods, Namespaces,
//     NetworkPolicies and (when their CRD is installed)
//     ClusterNetworkPolicies for network policy.
//
// The agent needs list/watch/patch on nodes, patch on nodes/status and
// list/watch on pods, namespaces, networkpolicies and
// clusternetworkpolicies (deploy/podnet.yaml has the ClusterRole). This package is linked only into the
// podnet-agent binary: never import it from cmd/podnet or a plugin.
package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	cnpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/podnet/podnet/agent/datastore"
)

// FieldManager names podnet's writes in the Node's managedFields.
const FieldManager = "podnet-agent"

// Options configures New.
type Options struct {
	// Kubeconfig is a kubeconfig file; "" means the in-cluster config (the
	// agent runs in a pod with a service account).
	Kubeconfig string
	// Config, if set, is used instead of Kubeconfig.
	Config *rest.Config
	// Client, if set, is used as is (Config and Kubeconfig are ignored).
	Client k8s.Interface
	// PolicyClient reads ClusterNetworkPolicies; when Client is set it is
	// used as is (nil: no ClusterNetworkPolicies are read), else it is
	// made from the same configuration.
	PolicyClient cnpclient.Interface
	// Log receives the waiting-for-podCIDR messages; nil discards them.
	Log *slog.Logger
	// PollInterval is how often Lease looks at the Node while it waits
	// (default 1s).
	PollInterval time.Duration
}

// Store is a datastore.Store on Kubernetes Node objects.
type Store struct {
	cli      k8s.Interface
	pcli     cnpclient.Interface // nil: no ClusterNetworkPolicies
	log      *slog.Logger
	poll     time.Duration
	informer cache.SharedIndexInformer
	cancel   context.CancelFunc

	mu      sync.Mutex
	node    string
	subnets []netip.Prefix // the node's pod CIDRs when leased
	expired chan struct{}  // closed when the Node goes away or its CIDRs change
}

var _ datastore.Store = (*Store)(nil)

// RESTConfig loads the client configuration: kubeconfig if set, else the
// in-cluster one.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: no --kubeconfig given and not running in a pod (%w): pass --kubeconfig or run the agent as a DaemonSet", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// New connects to the apiserver and starts the Node informer.
func New(ctx context.Context, o Options) (*Store, error) {
	cli, pcli := o.Client, o.PolicyClient
	if cli == nil {
		cfg := o.Config
		if cfg == nil {
			var err error
			if cfg, err = RESTConfig(o.Kubeconfig); err != nil {
				return nil, err
			}
		}
		cfg = rest.CopyConfig(cfg)
		if cfg.UserAgent == "" {
			cfg.UserAgent = FieldManager
		}
		// Custom resources are JSON only.
		var err error
		if pcli, err = cnpclient.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("kubernetes: client: %w", err)
		}
		cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
		cfg.ContentType = "application/vnd.kubernetes.protobuf"
		if cli, err = k8s.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("kubernetes: client: %w", err)
		}
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{cli: cli, pcli: pcli, log: log, poll: o.PollInterval}
	if s.poll <= 0 {
		s.poll = time.Second
	}
	f := informers.NewSharedInformerFactoryWithOptions(cli, 0)
	s.informer = f.Core().V1().Nodes().Informer()
	// Only spec, status conditions and annotations are read; managed
	// fields are dead weight in the cache.
	if err := s.informer.SetTransform(stripManagedFields); err != nil {
		return nil, err
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { s.checkLease(obj, false) },
		DeleteFunc: func(obj any) { s.checkLease(obj, true) },
	}); err != nil {
		return nil, err
	}
	ictx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.informer.RunWithContext(ictx)
	return s, nil
}

// stripManagedFields is the informer's transform: it drops
// metadata.managedFields (the cache is private to this store, so the object
// may be modified in place).
func stripManagedFields(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		n.ManagedFields = nil
	}
	return obj, nil
}

// checkLease closes the lease's Expired channel when our Node is deleted
// or its pod CIDRs no longer match what Lease returned.
func (s *Store) checkLease(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expired == nil || n.Name != s.node {
		return
	}
	lost := deleted
	if !lost {
		cidrs, err := PodCIDRs(n)
		lost = err != nil || !slices.Equal(cidrs, s.subnets)
	}
	if lost {
		s.log.Warn("node object deleted or its pod CIDRs changed: leasing again", "node", n.Name, "deleted", deleted)
		close(s.expired)
		s.expired = nil
	}
}

// synced waits for the informer's first list.
func (s *Store) synced(ctx context.Context) error {
	if s.informer.HasSynced() {
		return nil
	}
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		if ctx.Err() != nil {
			return fmt.Errorf("kubernetes: waiting for the node list: %w", ctx.Err())
		}
		return errors.New("kubernetes: node informer stopped before its first list")
	}
	return nil
}

// cached returns the informer's copy of node (nil if absent). Callers must
// not modify it.
func (s *Store) cached(name string) *corev1.Node {
	obj, ok, err := s.informer.GetIndexer().GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	n, _ := obj.(*corev1.Node)
	return n
}

// Lease implements datastore.Store: it waits until the Node exists and has
// spec.podCIDRs, then returns, per pool, the pod CIDR of its family.
// req.Preferred is ignored: Kubernetes decides.
func (s *Store) Lease(ctx context.Context, req datastore.LeaseRequest) (*datastore.Lease, error) {
	if req.Node == "" {
		return nil, errors.New("kubernetes: empty node name")
	}
	if err := s.synced(ctx); err != nil {
		return nil, err
	}
	var lastWhy string
	var lastLog time.Time
	for {
		var why string
		n := s.cached(req.Node)
		switch {
		case n == nil:
			why = "no Node object with this name yet (is --node-name the name kubelet registered?)"
		default:
			cidrs, err := PodCIDRs(n)
			if err != nil {
				return nil, err
			}
			if len(cidrs) == 0 {
				why = "its spec.podCIDRs is not set yet (kube-controller-manager --allocate-node-cidrs --cluster-cidr sets it)"
				break
			}
			subnets, err := MatchPools(req.Node, cidrs, req.Pools)
			if err != nil {
				return nil, err
			}
			expired := make(chan struct{})
			s.mu.Lock()
			if s.expired != nil {
				close(s.expired)
			}
			s.node, s.subnets, s.expired = req.Node, cidrs, expired
			s.mu.Unlock()
			if lastWhy != "" {
				s.log.Info("node has pod CIDRs", "node", req.Node, "podCIDRs", cidrs)
			}
			return &datastore.Lease{Node: req.Node, Subnets: subnets, Expired: expired}, nil
		}
		if why != lastWhy || time.Since(lastLog) > 30*time.Second {
			s.log.Info("waiting for the node's pod CIDRs", "node", req.Node, "reason", why)
			lastWhy, lastLog = why, time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kubernetes: node %q: %s: %w", req.Node, why, ctx.Err())
		case <-time.After(s.poll):
		}
	}
}

// MatchPools picks, for each pool in order, the node's pod CIDR of the same
// family, which must lie inside the pool's cluster CIDR.
func MatchPools(node string, podCIDRs []netip.Prefix, pools []datastore.Pool) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(pools))
	for _, pool := range pools {
		i := slices.IndexFunc(podCIDRs, func(p netip.Prefix) bool { return p.Addr().Is4() == pool.CIDR.Addr().Is4() })
		if i < 0 {
			fam := "IPv4"
			if pool.CIDR.Addr().Is6() {
				fam = "IPv6"
			}
			return nil, fmt.Errorf("kubernetes: node %q has no %s pod CIDR (spec.podCIDRs %v) but cluster CIDR %s is configured: allocate dual-stack node CIDRs or drop that --cluster-cidr",
				node, fam, podCIDRs, pool.CIDR)
		}
		p := podCIDRs[i]
		if p.Bits() < pool.CIDR.Bits() || !pool.CIDR.Contains(p.Addr()) {
			return nil, fmt.Errorf("kubernetes: node %q pod CIDR %s is outside cluster CIDR %s: make --cluster-cidr match kube-controller-manager's",
				node, p, pool.CIDR)
		}
		out = append(out, p)
	}
	return out, nil
}

// Publish implements datastore.Store: it annotates the Node (skipped when
// the annotations are already right) and marks its network available.
func (s *Store) Publish(ctx context.Context, info datastore.NodeInfo) error {
	s.mu.Lock()
	node := s.node
	s.mu.Unlock()
	if node == "" {
		return datastore.ErrNoLease
	}
	if info.Name != node {
		return fmt.Errorf("kubernetes: publish for node %q under the lease of node %q", info.Name, node)
	}
	want := Annotations(info)
	cur := s.cached(node)
	if cur == nil || !annotationsMatch(cur, want) {
		patch, err := annotationPatch(want)
		if err != nil {
			return err
		}
		cur, err = s.cli.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
		if err != nil {
			return fmt.Errorf("kubernetes: annotate node %q: %w", node, err)
		}
	}
	if !networkReady(cur) {
		if err := s.setNetworkAvailable(ctx, node); err != nil {
			return err
		}
	}
	return nil
}

// setNetworkAvailable sets the node's NetworkUnavailable condition to
// False (a strategic merge patch keyed on the condition type, so the other
// conditions are untouched).
func (s *Store) setNetworkAvailable(ctx context.Context, node string) error {
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type:               corev1.NodeNetworkUnavailable,
		Status:             corev1.ConditionFalse,
		Reason:             ConditionReason,
		Message:            ConditionMessage,
		LastTransitionTime: now,
		LastHeartbeatTime:  now,
	}}}})
	if err != nil {
		return err
	}
	if _, err := s.cli.CoreV1().Nodes().PatchStatus(ctx, node, patch); err != nil {
		return fmt.Errorf("kubernetes: clear NetworkUnavailable on node %q: %w", node, err)
	}
	return nil
}

// List implements datastore.Store from the informer's cache. Nodes that
// have not published are skipped; malformed annotations make a bad record
// without hiding the good ones. The subnet owners are the records' own
// subnets: spec.podCIDRs, which only the control plane sets.
func (s *Store) List(ctx context.Context) (datastore.Snapshot, error) {
	if err := s.synced(ctx); err != nil {
		return datastore.Snapshot{}, err
	}
	var out []datastore.NodeInfo
	var bad []datastore.BadRecord
	for _, obj := range s.informer.GetStore().List() {
		n, ok := obj.(*corev1.Node)
		if !ok {
			continue
		}
		info, err := NodeInfoFrom(n)
		if errors.Is(err, errNotPublished) {
			continue
		}
		if err != nil {
			bad = append(bad, datastore.BadRecord{Key: "node/" + n.Name, Reason: err.Error()})
			continue
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	sort.Slice(bad, func(i, j int) bool { return bad[i].Key < bad[j].Key })
	snap := datastore.SnapshotOf(out)
	snap.Bad = bad
	return snap, nil
}

// Watch implements datastore.Store: one informer event handler per call,
// removed when ctx ends. The current records arrive first as Puts.
func (s *Store) Watch(ctx context.Context) (<-chan datastore.Event, error) {
	out := make(chan datastore.Event, 64)
	var mu sync.Mutex // held while sending; close waits for it
	closed := false
	send := func(ev datastore.Event) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	decode := func(obj any) (datastore.NodeInfo, bool) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return datastore.NodeInfo{}, false
		}
		info, err := NodeInfoFrom(n)
		return info, err == nil
	}
	reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if info, ok := decode(obj); ok {
				send(datastore.Event{Type: datastore.Put, Name: info.Name, Node: &info})
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			oi, oldOK := decode(oldObj)
			ni, newOK := decode(newObj)
			switch {
			case newOK && (!oldOK || !nodeInfoEqual(oi, ni)):
				send(datastore.Event{Type: datastore.Put, Name: ni.Name, Node: &ni})
			case !newOK && oldOK:
				send(datastore.Event{Type: datastore.Delete, Name: oi.Name})
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				if _, isNode := d.Obj.(*corev1.Node); !isNode {
					send(datastore.Event{Type: datastore.Delete, Name: d.Key})
					return
				}
				obj = d.Obj
			}
			if info, ok := decode(obj); ok {
				send(datastore.Event{Type: datastore.Delete, Name: info.Name})
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: watch nodes: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = s.informer.RemoveEventHandler(reg)
		mu.Lock()
		closed = true
		close(out)
		mu.Unlock()
	}()
	return out, nil
}

// Close implements datastore.Store: it stops the informer. The Node's
// annotations and pod CIDRs stay.
func (s *Store) Close() error {
	s.cancel()
	return nil
}

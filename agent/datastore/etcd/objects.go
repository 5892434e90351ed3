package etcd

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/policy"
)

// Object keys, under <prefix>/objects/:
//
//	namespaces/<name>
//	pods/<namespace>/<name>
//	networkpolicies/<namespace>/<name>
//	clusternetworkpolicies/<name>
//
// Values are the objects' JSON as `kubectl get -o json` prints them
// (ClusterNetworkPolicies as policy.networking.k8s.io/v1beta1; a v1alpha2
// record, the same schema, is read too).

// Kinds of the stored objects, as their "kind" field says.
const (
	KindNamespace     = "Namespace"
	KindPod           = "Pod"
	KindNetworkPolicy = "NetworkPolicy"

	KindClusterNetworkPolicy = "ClusterNetworkPolicy"
)

// cnpV1alpha2 is the ClusterNetworkPolicy version the apiserver still
// serves besides v1beta1, with the same schema.
const cnpV1alpha2 = "policy.networking.k8s.io/v1alpha2"

var kinds = map[string]struct{ resource, apiVersion string }{
	KindNamespace:     {"namespaces", "v1"},
	KindPod:           {"pods", "v1"},
	KindNetworkPolicy: {"networkpolicies", "networking.k8s.io/v1"},

	KindClusterNetworkPolicy: {"clusternetworkpolicies", "policy.networking.k8s.io/v1beta1"},
}

// clusterScoped reports whether kind's objects have no namespace.
func clusterScoped(kind string) bool {
	return kind == KindNamespace || kind == KindClusterNetworkPolicy
}

// ObjectsPrefix is where the objects of the store with key prefix live.
func ObjectsPrefix(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return strings.TrimRight(prefix, "/") + "/objects/"
}

// ObjectKey is the key of an object of kind (ns is ignored for a
// Namespace and a ClusterNetworkPolicy).
func ObjectKey(prefix, kind, ns, name string) (string, error) {
	k, ok := kinds[kind]
	if !ok {
		return "", fmt.Errorf("etcd: kind %q: only Namespace, Pod, NetworkPolicy and ClusterNetworkPolicy are stored", kind)
	}
	if name == "" || strings.Contains(name, "/") || strings.Contains(ns, "/") {
		return "", fmt.Errorf("etcd: %s name %q / namespace %q: must be non-empty and without '/'", kind, name, ns)
	}
	if clusterScoped(kind) {
		return ObjectsPrefix(prefix) + k.resource + "/" + name, nil
	}
	if ns == "" {
		return "", fmt.Errorf("etcd: %s %q has no namespace", kind, name)
	}
	return ObjectsPrefix(prefix) + k.resource + "/" + ns + "/" + name, nil
}

// identify returns an object's kind, namespace and name, and validates it.
func identify(obj runtime.Object) (kind, ns, name string, err error) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return KindNamespace, "", o.Name, datastore.ValidateNamespace(o)
	case *corev1.Pod:
		return KindPod, o.Namespace, o.Name, datastore.ValidatePod(o)
	case *networkingv1.NetworkPolicy:
		return KindNetworkPolicy, o.Namespace, o.Name, datastore.ValidatePolicy(o)
	case *cnp.ClusterNetworkPolicy:
		return KindClusterNetworkPolicy, "", o.Name, datastore.ValidateClusterPolicy(o)
	}
	return "", "", "", fmt.Errorf("etcd: cannot store a %T: only Namespace, Pod, NetworkPolicy and ClusterNetworkPolicy", obj)
}

// PutObject validates obj (a *corev1.Namespace, *corev1.Pod,
// *networkingv1.NetworkPolicy or *cnp.ClusterNetworkPolicy) and writes it (create or replace) with its
// apiVersion and kind set. It reports whether the object was created.
func PutObject(ctx context.Context, cli *clientv3.Client, prefix string, obj runtime.Object) (created bool, err error) {
	kind, ns, name, err := identify(obj)
	if err != nil {
		return false, err
	}
	key, err := ObjectKey(prefix, kind, ns, name)
	if err != nil {
		return false, err
	}
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvk(kind))
	b, err := json.Marshal(obj)
	if err != nil {
		return false, err
	}
	if len(b) > datastore.MaxObjectBytes {
		return false, fmt.Errorf("etcd: %s %s is %d bytes encoded, over the %d-byte limit", kind, key, len(b), datastore.MaxObjectBytes)
	}
	resp, err := cli.Put(ctx, key, string(b), clientv3.WithPrevKV())
	if err != nil {
		return false, fmt.Errorf("etcd: put %s: %w", key, err)
	}
	return resp.PrevKv == nil, nil
}

// GetObject reads one object (nil, nil when absent).
func GetObject(ctx context.Context, cli *clientv3.Client, prefix, kind, ns, name string) (runtime.Object, error) {
	key, err := ObjectKey(prefix, kind, ns, name)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcd: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	obj, bad := decodeObject(ObjectsPrefix(prefix), resp.Kvs[0].Key, resp.Kvs[0].Value)
	if bad != "" {
		return nil, fmt.Errorf("etcd: %s: %s", key, bad)
	}
	return obj, nil
}

// DeleteObject deletes one object and reports whether it existed.
func DeleteObject(ctx context.Context, cli *clientv3.Client, prefix, kind, ns, name string) (bool, error) {
	key, err := ObjectKey(prefix, kind, ns, name)
	if err != nil {
		return false, err
	}
	resp, err := cli.Delete(ctx, key)
	if err != nil {
		return false, fmt.Errorf("etcd: delete %s: %w", key, err)
	}
	return resp.Deleted > 0, nil
}

// decodeObject reads one object record under objPrefix, or says why it
// cannot be used: too large, a key that is not an object key, not the JSON
// of its kind, or naming another object than its key does.
func decodeObject(objPrefix string, key, val []byte) (runtime.Object, string) {
	if len(val) > datastore.MaxObjectBytes {
		return nil, fmt.Sprintf("record is %d bytes, over the %d-byte limit", len(val), datastore.MaxObjectBytes)
	}
	parts := strings.Split(strings.TrimPrefix(string(key), objPrefix), "/")
	var kind, ns, name string
	switch {
	case len(parts) == 2 && parts[0] == "namespaces":
		kind, name = KindNamespace, parts[1]
	case len(parts) == 3 && parts[0] == "pods":
		kind, ns, name = KindPod, parts[1], parts[2]
	case len(parts) == 3 && parts[0] == "networkpolicies":
		kind, ns, name = KindNetworkPolicy, parts[1], parts[2]
	case len(parts) == 2 && parts[0] == "clusternetworkpolicies":
		kind, name = KindClusterNetworkPolicy, parts[1]
	default:
		return nil, "not an object key (namespaces/<name>, pods/<ns>/<name>, networkpolicies/<ns>/<name> or clusternetworkpolicies/<name>)"
	}
	var obj interface {
		runtime.Object
		GetName() string
		GetNamespace() string
		SetNamespace(string)
	}
	switch kind {
	case KindNamespace:
		obj = &corev1.Namespace{}
	case KindPod:
		obj = &corev1.Pod{}
	case KindClusterNetworkPolicy:
		obj = &cnp.ClusterNetworkPolicy{}
	default:
		obj = &networkingv1.NetworkPolicy{}
	}
	if err := json.Unmarshal(val, obj); err != nil {
		return nil, fmt.Sprintf("not a %s: %v", kind, err)
	}
	want := gvk(kind)
	got := obj.GetObjectKind().GroupVersionKind()
	sameVersion := got.Version == "" || got.GroupVersion() == want.GroupVersion() ||
		(kind == KindClusterNetworkPolicy && got.GroupVersion().String() == cnpV1alpha2)
	if (got.Kind != "" && got.Kind != want.Kind) || !sameVersion {
		return nil, fmt.Sprintf("record is a %s %s, its key a %s", got.GroupVersion(), got.Kind, kind)
	}
	if obj.GetName() != name {
		return nil, fmt.Sprintf("record names %q, its key %q", obj.GetName(), name)
	}
	if clusterScoped(kind) {
		if obj.GetNamespace() != "" {
			return nil, fmt.Sprintf("record is in namespace %q, but a %s is cluster-scoped", obj.GetNamespace(), kind)
		}
	} else {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(ns)
		}
		if obj.GetNamespace() != ns {
			return nil, fmt.Sprintf("record is in namespace %q, its key in %q", obj.GetNamespace(), ns)
		}
	}
	return obj, ""
}

// ObjectSource is the datastore.ObjectSource on etcd: one list of
// <prefix>/objects/, then a watch from the list's revision; a compacted or
// failed watch (etcd restarted, leader lost) lists again. Records that
// cannot be used are skipped and logged (Bad says which), never fatal.
type ObjectSource struct {
	cli    *clientv3.Client
	prefix string // <prefix>/objects/
	log    *slog.Logger

	mu     sync.Mutex
	synced bool
	objs   map[string]any     // by key: *corev1.Namespace, *policy.Pod, *networkingv1.NetworkPolicy, *cnp.ClusterNetworkPolicy
	bad    map[string]string  // key -> reason
	snap   *datastore.Objects // built lazily from objs
}

var _ datastore.ObjectSource = (*ObjectSource)(nil)

// NewObjectSource reads the objects under prefix ("" = DefaultPrefix)
// through cli; log (nil discards) receives skipped records and re-lists.
func NewObjectSource(cli *clientv3.Client, prefix string, log *slog.Logger) *ObjectSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ObjectSource{cli: cli, prefix: ObjectsPrefix(prefix), log: log}
}

// ObjectSource returns an ObjectSource on this store's client and prefix.
func (s *Store) ObjectSource(log *slog.Logger) *ObjectSource {
	return NewObjectSource(s.cli, s.prefix, log)
}

// relistDelay is the pause before listing again after a failure.
var relistDelay = time.Second

// Run implements datastore.ObjectSource. It lists again, after a short
// pause, whenever a list or watch fails, so it only returns when ctx ends.
func (o *ObjectSource) Run(ctx context.Context, changed func()) error {
	for {
		rev, err := o.list(ctx)
		if err == nil {
			changed()
			err = o.watch(ctx, rev, changed)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		o.log.Warn("policy objects: listing again", "prefix", o.prefix, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(relistDelay):
		}
	}
}

func (o *ObjectSource) list(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := o.cli.Get(lctx, o.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: list %s: %w", o.prefix, err)
	}
	objs, bad := map[string]any{}, map[string]string{}
	for _, kv := range resp.Kvs {
		if obj, why := o.decode(kv.Key, kv.Value); why != "" {
			bad[string(kv.Key)] = why
		} else if obj != nil {
			objs[string(kv.Key)] = obj
		}
	}
	o.mu.Lock()
	o.objs, o.bad, o.snap, o.synced = objs, bad, nil, true
	o.mu.Unlock()
	return resp.Header.Revision, nil
}

// decode decodes a record into what the source keeps: pods converted
// (policy.PodFromAPI), nil for a finished pod (absent to policy).
func (o *ObjectSource) decode(key, val []byte) (any, string) {
	obj, why := decodeObject(o.prefix, key, val)
	if why != "" {
		o.log.Warn("policy objects: skipping a record that cannot be used", "key", string(key), "reason", why)
		return nil, why
	}
	if p, ok := obj.(*corev1.Pod); ok {
		if policy.Finished(p) {
			return nil, ""
		}
		pp := policy.PodFromAPI(p)
		return &pp, ""
	}
	return obj, ""
}

// watch applies changes after rev until the watch fails or ctx ends.
func (o *ObjectSource) watch(ctx context.Context, rev int64, changed func()) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := o.cli.Watch(clientv3.WithRequireLeader(wctx), o.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if wr.CompactRevision > 0 {
				return fmt.Errorf("watch compacted at revision %d: %w", wr.CompactRevision, err)
			}
			return err
		}
		if len(wr.Events) == 0 {
			continue
		}
		o.mu.Lock()
		for _, e := range wr.Events {
			k := string(e.Kv.Key)
			old := o.objs[k]
			delete(o.objs, k)
			delete(o.bad, k)
			var obj any
			if e.Type == clientv3.EventTypePut {
				// A record that cannot be used is, to the reader, gone.
				var why string
				if obj, why = o.decode(e.Kv.Key, e.Kv.Value); why != "" {
					o.bad[k] = why
				} else if obj != nil {
					o.objs[k] = obj
				}
			}
			o.patch(old, obj)
		}
		o.mu.Unlock()
		changed()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch closed")
}

// Synced implements datastore.ObjectSource.
func (o *ObjectSource) Synced() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.synced
}

// Objects implements datastore.ObjectSource: sorted by namespace and name.
func (o *ObjectSource) Objects() datastore.Objects {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.synced {
		return datastore.Objects{}
	}
	if o.snap != nil {
		return *o.snap
	}
	s := datastore.Objects{Namespaces: []*corev1.Namespace{}, Pods: []*policy.Pod{}, Policies: []*networkingv1.NetworkPolicy{},
		ClusterPolicies: []*cnp.ClusterNetworkPolicy{}}
	type entry struct {
		id  [2]string
		obj any
	}
	all := make([]entry, 0, len(o.objs))
	for _, obj := range o.objs {
		all = append(all, entry{nsName(obj), obj})
	}
	slices.SortFunc(all, func(a, b entry) int {
		return cmp.Or(strings.Compare(a.id[0], b.id[0]), strings.Compare(a.id[1], b.id[1]))
	})
	for _, e := range all {
		switch v := e.obj.(type) {
		case *corev1.Namespace:
			s.Namespaces = append(s.Namespaces, v)
		case *policy.Pod:
			s.Pods = append(s.Pods, v)
		case *networkingv1.NetworkPolicy:
			s.Policies = append(s.Policies, v)
		case *cnp.ClusterNetworkPolicy:
			s.ClusterPolicies = append(s.ClusterPolicies, v)
		}
	}
	o.snap = &s
	return s
}

// patch makes the snapshot (if built) hold obj instead of old (either
// may be nil; both have the key's namespace and name), copying the one
// list it changes: snapshots already handed out never change.
func (o *ObjectSource) patch(old, obj any) {
	if o.snap == nil || (old == nil && obj == nil) {
		return
	}
	s := *o.snap
	ref := obj
	if ref == nil {
		ref = old
	}
	switch ref.(type) {
	case *corev1.Namespace:
		s.Namespaces = patchSorted(s.Namespaces, ref, obj)
	case *policy.Pod:
		s.Pods = patchSorted(s.Pods, ref, obj)
	case *networkingv1.NetworkPolicy:
		s.Policies = patchSorted(s.Policies, ref, obj)
	case *cnp.ClusterNetworkPolicy:
		s.ClusterPolicies = patchSorted(s.ClusterPolicies, ref, obj)
	}
	o.snap = &s
}

// patchSorted returns a copy of list (sorted by namespace and name) with
// the entry of ref's namespace and name replaced by obj, or removed when
// obj is nil.
func patchSorted[T any](list []T, ref, obj any) []T {
	id := nsName(ref)
	i, found := slices.BinarySearchFunc(list, id, func(e T, id [2]string) int {
		x := nsName(e)
		return cmp.Or(strings.Compare(x[0], id[0]), strings.Compare(x[1], id[1]))
	})
	out := slices.Clone(list)
	switch {
	case obj == nil && found:
		return slices.Delete(out, i, i+1)
	case obj == nil:
		return out
	case found:
		out[i] = obj.(T)
		return out
	default:
		return slices.Insert(out, i, obj.(T))
	}
}

// nsName sorts objects by namespace, then name.
func nsName(obj any) [2]string {
	if p, ok := obj.(*policy.Pod); ok {
		return [2]string{p.Namespace, p.Name}
	}
	m, ok := obj.(interface {
		GetName() string
		GetNamespace() string
	})
	if !ok {
		return [2]string{}
	}
	return [2]string{m.GetNamespace(), m.GetName()}
}

func gvk(kind string) schema.GroupVersionKind {
	gv, _ := schema.ParseGroupVersion(kinds[kind].apiVersion)
	return gv.WithKind(kind)
}

// Bad lists the records skipped by the last list and the watch since,
// sorted by key.
func (o *ObjectSource) Bad() []datastore.BadRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []datastore.BadRecord
	for k, why := range o.bad {
		out = append(out, datastore.BadRecord{Key: k, Reason: why})
	}
	slices.SortFunc(out, func(a, b datastore.BadRecord) int { return strings.Compare(a.Key, b.Key) })
	return out
}

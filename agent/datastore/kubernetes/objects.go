package kubernetes

import (
	"context"
	"sort"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/podnet/podnet/agent/datastore"
)

// ObjectSource is the datastore.ObjectSource on the apiserver: client-go
// shared informers on Pods, Namespaces and NetworkPolicies. The objects are
// kept as the apiserver sends them. It needs get/list/watch on pods,
// namespaces and networking.k8s.io networkpolicies (docs/agent.md).
type ObjectSource struct {
	cli    k8s.Interface
	synced atomic.Bool
	ns     cache.SharedIndexInformer
	pods   cache.SharedIndexInformer
	pols   cache.SharedIndexInformer
}

var _ datastore.ObjectSource = (*ObjectSource)(nil)

// NewObjectSource returns an ObjectSource reading through cli.
func NewObjectSource(cli k8s.Interface) *ObjectSource {
	return &ObjectSource{cli: cli}
}

// ObjectSource returns an ObjectSource on this store's client.
func (s *Store) ObjectSource() *ObjectSource { return NewObjectSource(s.cli) }

// Run implements datastore.ObjectSource: it starts the informers, calls
// changed once all three caches have synced and on every event after
// that, and returns ctx's error when ctx ends.
func (o *ObjectSource) Run(ctx context.Context, changed func()) error {
	f := informers.NewSharedInformerFactoryWithOptions(o.cli, 0)
	o.ns = f.Core().V1().Namespaces().Informer()
	o.pods = f.Core().V1().Pods().Informer()
	o.pols = f.Networking().V1().NetworkPolicies().Informer()
	notify := func() {
		if o.synced.Load() {
			changed()
		}
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, inf := range []cache.SharedIndexInformer{o.ns, o.pods, o.pols} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), o.ns.HasSynced, o.pods.HasSynced, o.pols.HasSynced) {
		return ctx.Err()
	}
	o.synced.Store(true)
	changed()
	<-ctx.Done()
	return ctx.Err()
}

// Synced implements datastore.ObjectSource.
func (o *ObjectSource) Synced() bool { return o.synced.Load() }

// Objects implements datastore.ObjectSource: the informers' caches, sorted
// by namespace and name.
func (o *ObjectSource) Objects() datastore.Objects {
	if !o.synced.Load() {
		return datastore.Objects{}
	}
	return datastore.Objects{
		Namespaces: listOf[*corev1.Namespace](o.ns),
		Pods:       listOf[*corev1.Pod](o.pods),
		Policies:   listOf[*networkingv1.NetworkPolicy](o.pols),
	}
}

func listOf[T interface {
	GetName() string
	GetNamespace() string
}](inf cache.SharedIndexInformer) []T {
	out := []T{}
	for _, obj := range inf.GetStore().List() {
		if t, ok := obj.(T); ok {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.GetNamespace() < b.GetNamespace() || (a.GetNamespace() == b.GetNamespace() && a.GetName() < b.GetName())
	})
	return out
}

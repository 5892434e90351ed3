package kubernetes

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/policy"
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

	mu   sync.Mutex
	conv map[*corev1.Pod]*policy.Pod // the last Objects' conversions
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
	if err := o.pods.SetTransform(trimPod); err != nil {
		return err
	}
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
		Pods:       o.podList(),
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

// podList is the cached pods, not finished, in policy's form: converted
// once per pod object (the informer replaces an object that changes).
func (o *ObjectSource) podList() []*policy.Pod {
	pods := listOf[*corev1.Pod](o.pods)
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]*policy.Pod, 0, len(pods))
	next := make(map[*corev1.Pod]*policy.Pod, len(pods))
	for _, p := range pods {
		if policy.Finished(p) {
			continue
		}
		c := o.conv[p]
		if c == nil {
			v := policy.PodFromAPI(p)
			c = &v
		}
		next[p] = c
		out = append(out, c)
	}
	o.conv = next
	return out
}

// trimPod keeps of a Pod what policy reads (names, labels, node, host
// network, phase, addresses, containers' named ports), so the informer's
// cache does not hold whole pod specs and statuses.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	t := &corev1.Pod{TypeMeta: p.TypeMeta}
	t.Name, t.Namespace, t.UID, t.ResourceVersion, t.Labels = p.Name, p.Namespace, p.UID, p.ResourceVersion, p.Labels
	t.Spec.NodeName, t.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	keep := func(cs []corev1.Container) []corev1.Container {
		var out []corev1.Container
		for _, c := range cs {
			if len(c.Ports) > 0 {
				out = append(out, corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy})
			}
		}
		return out
	}
	t.Spec.Containers, t.Spec.InitContainers = keep(p.Spec.Containers), keep(p.Spec.InitContainers)
	t.Status.Phase, t.Status.PodIP, t.Status.PodIPs = p.Status.Phase, p.Status.PodIP, p.Status.PodIPs
	return t, nil
}

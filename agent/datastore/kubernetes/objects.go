package kubernetes

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	cnpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	cnpinformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/policy"
)

// ObjectSource is the datastore.ObjectSource on the apiserver: client-go
// shared informers on Pods, Namespaces and NetworkPolicies, and one on
// ClusterNetworkPolicies (policy.networking.k8s.io/v1beta1) once they can
// be listed. The objects are kept as the apiserver sends them. It needs
// list/watch on pods, namespaces, networking.k8s.io networkpolicies and
// policy.networking.k8s.io clusternetworkpolicies (deploy/podnet.yaml).
//
// ClusterNetworkPolicies are optional: while their CRD is not installed
// (or the agent may not list them) the source says why once in the log,
// has none, and tries again every ClusterPolicyRetry; NetworkPolicy does
// not wait for them.
type ObjectSource struct {
	cli    k8s.Interface
	pcli   cnpclient.Interface // nil: no ClusterNetworkPolicies
	log    *slog.Logger
	synced atomic.Bool
	ns     cache.SharedIndexInformer
	pods   cache.SharedIndexInformer
	pols   cache.SharedIndexInformer
	cnps   atomic.Pointer[cache.SharedIndexInformer] // set once its cache has synced

	mu   sync.Mutex
	conv map[*corev1.Pod]*policy.Pod // the last Objects' conversions
}

var _ datastore.ObjectSource = (*ObjectSource)(nil)

// ClusterPolicyRetry is the longest pause between attempts to list
// ClusterNetworkPolicies while they cannot be (the first retries come
// sooner: 1s, doubling).
var ClusterPolicyRetry = 30 * time.Second

// clusterPolicyFirstSync bounds how long the first complete list waits for
// the ClusterNetworkPolicies once they can be listed.
const clusterPolicyFirstSync = 30 * time.Second

// NewObjectSource returns an ObjectSource reading through cli, and
// ClusterNetworkPolicies through pcli (nil: none); log (nil discards)
// says why ClusterNetworkPolicies cannot be read.
func NewObjectSource(cli k8s.Interface, pcli cnpclient.Interface, log *slog.Logger) *ObjectSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ObjectSource{cli: cli, pcli: pcli, log: log}
}

// ObjectSource returns an ObjectSource on this store's clients and log.
func (s *Store) ObjectSource() *ObjectSource { return NewObjectSource(s.cli, s.pcli, s.log) }

// Run implements datastore.ObjectSource: it starts the informers, calls
// changed once the caches have synced (the ClusterNetworkPolicies' only
// if they can be listed, and at most clusterPolicyFirstSync after) and on
// every event after that, and returns ctx's error when ctx ends.
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
	cnpFirst := make(chan struct{})
	if o.pcli != nil {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.runClusterPolicies(ctx, h, notify, cnpFirst)
		}()
		defer wg.Wait()
	} else {
		close(cnpFirst)
	}
	if !cache.WaitForCacheSync(ctx.Done(), o.ns.HasSynced, o.pods.HasSynced, o.pols.HasSynced) {
		return ctx.Err()
	}
	select {
	case <-cnpFirst:
	case <-ctx.Done():
		return ctx.Err()
	}
	o.synced.Store(true)
	changed()
	<-ctx.Done()
	return ctx.Err()
}

// runClusterPolicies lists ClusterNetworkPolicies (one item) until that
// works, then runs their informer; first is closed once the first list
// attempt failed, or the informer synced, or clusterPolicyFirstSync
// passed.
func (o *ObjectSource) runClusterPolicies(ctx context.Context, h cache.ResourceEventHandler, notify func(), first chan struct{}) {
	var once sync.Once
	done := func() { once.Do(func() { close(first) }) }
	defer done()
	logged, delay := "", time.Second
	for {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := o.pcli.PolicyV1beta1().ClusterNetworkPolicies().List(lctx, metav1.ListOptions{Limit: 1})
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		why := "cannot list them"
		switch {
		case apierrors.IsNotFound(err):
			why = "their CRD (clusternetworkpolicies.policy.networking.k8s.io, v1beta1) is not installed: kubectl apply --server-side -f deploy/clusternetworkpolicies.yaml"
		case apierrors.IsForbidden(err):
			why = "the agent may not list them: its ClusterRole needs list, watch on policy.networking.k8s.io clusternetworkpolicies (deploy/podnet.yaml)"
		}
		if why != logged {
			o.log.Warn("ClusterNetworkPolicies ignored until they can be read, retrying", "reason", why, "err", err)
			logged = why
		}
		done()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, ClusterPolicyRetry)
	}
	f := cnpinformers.NewSharedInformerFactory(o.pcli, 0)
	inf := f.Policy().V1beta1().ClusterNetworkPolicies().Informer()
	if err := inf.SetTransform(trimClusterPolicy); err != nil {
		o.log.Warn("ClusterNetworkPolicies ignored", "err", err)
		return
	}
	if _, err := inf.AddEventHandler(h); err != nil {
		o.log.Warn("ClusterNetworkPolicies ignored", "err", err)
		return
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	go func() {
		select {
		case <-time.After(clusterPolicyFirstSync):
			done()
		case <-first:
		case <-ctx.Done():
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	o.cnps.Store(&inf)
	if logged != "" {
		o.log.Info("ClusterNetworkPolicies are read now")
	}
	done()
	notify()
	<-ctx.Done()
}

// trimClusterPolicy drops a ClusterNetworkPolicy's managed fields and
// status, which policy does not read.
func trimClusterPolicy(obj any) (any, error) {
	if p, ok := obj.(*cnp.ClusterNetworkPolicy); ok {
		p.ManagedFields = nil
		p.Status = cnp.ClusterNetworkPolicyStatus{}
	}
	return obj, nil
}

// Synced implements datastore.ObjectSource.
func (o *ObjectSource) Synced() bool { return o.synced.Load() }

// Objects implements datastore.ObjectSource: the informers' caches, sorted
// by namespace and name (no ClusterNetworkPolicies until they are read).
func (o *ObjectSource) Objects() datastore.Objects {
	if !o.synced.Load() {
		return datastore.Objects{}
	}
	cps := []*cnp.ClusterNetworkPolicy{}
	if inf := o.cnps.Load(); inf != nil {
		cps = listOf[*cnp.ClusterNetworkPolicy](*inf)
	}
	return datastore.Objects{
		Namespaces:      listOf[*corev1.Namespace](o.ns),
		Pods:            o.podList(),
		Policies:        listOf[*networkingv1.NetworkPolicy](o.pols),
		ClusterPolicies: cps,
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

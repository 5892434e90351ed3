package datastore

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/policy"
)

// Objects are the objects network policy reads, whatever the store
// (Kubernetes API objects; in etcd, the JSON a `kubectl get -o json`
// prints, stored under the store's prefix): namespaces and policies as
// Kubernetes types, pods converted on arrival to what policy reads
// (policy.PodFromAPI: a fraction of a core/v1 Pod's memory, which counts
// at 10,000 pods), finished pods (Succeeded, Failed) left out; and the
// cluster-scoped ClusterNetworkPolicies (policy.networking.k8s.io
// v1beta1), sorted by name (none when the CRD is not installed).
type Objects struct {
	Namespaces      []*corev1.Namespace
	Pods            []*policy.Pod
	Policies        []*networkingv1.NetworkPolicy
	ClusterPolicies []*cnp.ClusterNetworkPolicy
}

// Model is the compiler's input made of o (policy.ModelFrom, plus the
// ClusterNetworkPolicies).
func (o Objects) Model() policy.Model {
	m := policy.ModelFrom(o.Namespaces, o.Pods, o.Policies)
	m.ClusterPolicies = o.ClusterPolicies
	return m
}

// ObjectSource keeps an in-memory, watched copy of the Objects.
// Implementations: etcd (keys <prefix>/objects/{namespaces,pods,
// networkpolicies,clusternetworkpolicies}/...) and kubernetes (informers).
type ObjectSource interface {
	// Run lists and then watches until ctx is done, calling changed
	// (without blocking on it; it may be called often) after the first
	// complete list and after every change. It returns ctx's error, or
	// an error when the store cannot be read at all.
	Run(ctx context.Context, changed func()) error
	// Objects is the current copy (nil slices before the first list).
	// The objects are shared: callers must not modify them.
	Objects() Objects
	// Synced reports whether the first complete list has been read.
	Synced() bool
}

// ReadObjects runs src until its first complete list (or ctx ends) and
// returns the objects: for one-shot readers (`policy explain`, `dump`).
func ReadObjects(ctx context.Context, src ObjectSource) (Objects, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	synced := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- src.Run(ctx, func() {
			select {
			case synced <- struct{}{}:
			default:
			}
		})
	}()
	for !src.Synced() {
		select {
		case <-ctx.Done():
			return Objects{}, fmt.Errorf("reading policy objects: %w", ctx.Err())
		case err := <-errc:
			if err == nil {
				err = errors.New("source stopped")
			}
			return Objects{}, fmt.Errorf("reading policy objects: %w", err)
		case <-synced:
		}
	}
	return src.Objects(), nil
}

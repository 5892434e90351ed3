package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
)

// The lab keeps Kubernetes-typed objects (Namespaces, Pods,
// NetworkPolicies, ClusterNetworkPolicies) in its etcd under
// etcd.DefaultPrefix + "/objects/", where the agents' etcd.ObjectSource
// reads them.

// DefaultNamespace holds the pods `lab up` creates.
const DefaultNamespace = "default"

// ParseLabels parses --labels: "k=v,k2=v2" ("" = none).
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not KEY=VALUE", kv)
		}
		if err := checkLabel(k, v); err != nil {
			return nil, fmt.Errorf("--labels: %w", err)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--labels: key %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func checkLabel(k, v string) error {
	if errs := validation.IsQualifiedName(k); len(errs) > 0 {
		return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
		return fmt.Errorf("label %s value %q: %s", k, v, strings.Join(errs, "; "))
	}
	return nil
}

// ParsePorts parses --ports: "name=tcp/80,udp/53,..." (the name is
// optional; protocols tcp, udp, sctp).
func ParsePorts(s string) ([]corev1.ContainerPort, error) {
	var out []corev1.ContainerPort
	if s == "" {
		return nil, nil
	}
	names := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		name, spec, ok := strings.Cut(item, "=")
		if !ok {
			name, spec = "", item
		}
		proto, num, ok := strings.Cut(spec, "/")
		if !ok {
			return nil, fmt.Errorf("--ports: %q is not [NAME=]PROTOCOL/PORT (e.g. http=tcp/80)", item)
		}
		p := corev1.ContainerPort{Name: name, Protocol: corev1.Protocol(strings.ToUpper(proto))}
		switch p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			return nil, fmt.Errorf("--ports %q: protocol %q: use tcp, udp or sctp", item, proto)
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("--ports %q: port %q: must be 1-65535", item, num)
		}
		p.ContainerPort = int32(n)
		if name != "" {
			if errs := validation.IsValidPortName(name); len(errs) > 0 {
				return nil, fmt.Errorf("--ports %q: name %q: %s", item, name, strings.Join(errs, "; "))
			}
			if names[name] {
				return nil, fmt.Errorf("--ports: name %q given twice", name)
			}
			names[name] = true
		}
		out = append(out, p)
	}
	return out, nil
}

// LabelChange is what `lab label` args say: labels to set and to remove.
type LabelChange struct {
	Set    map[string]string
	Remove []string
}

// ParseLabelArgs parses `lab label` arguments: k=v sets, k- removes.
func ParseLabelArgs(args []string) (LabelChange, error) {
	c := LabelChange{Set: map[string]string{}}
	if len(args) == 0 {
		return c, errors.New("no labels given: KEY=VALUE sets, KEY- removes")
	}
	seen := map[string]bool{}
	for _, a := range args {
		var k, v string
		if key, val, ok := strings.Cut(a, "="); ok {
			k, v = key, val
		} else if key, ok := strings.CutSuffix(a, "-"); ok {
			k = key
		} else {
			return c, fmt.Errorf("label %q: KEY=VALUE sets, KEY- removes", a)
		}
		if err := checkLabel(k, v); err != nil {
			return c, err
		}
		if seen[k] {
			return c, fmt.Errorf("label %q given twice", k)
		}
		seen[k] = true
		if strings.Contains(a, "=") {
			c.Set[k] = v
		} else {
			c.Remove = append(c.Remove, k)
		}
	}
	return c, nil
}

// Apply returns labels with c applied (labels is not modified).
func (c LabelChange) Apply(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		out[k] = v
	}
	for _, k := range c.Remove {
		delete(out, k)
	}
	for k, v := range c.Set {
		out[k] = v
	}
	return out
}

// DecodeObjects reads the documents of a `lab apply/delete -f` file, as
// kubectl accepts them: YAML (several documents separated by ---) or JSON
// (one object or several in a row), each a Namespace, NetworkPolicy or
// ClusterNetworkPolicy (policy.networking.k8s.io/v1beta1 or v1alpha2,
// stored as v1beta1; the standard channel's fields) or a List of them.
// Unknown fields are errors (kubectl's strict validation). A
// NetworkPolicy without a namespace is in "default"; a
// ClusterNetworkPolicy's namespace is ignored (it is cluster-scoped).
func DecodeObjects(r io.Reader) ([]runtime.Object, error) {
	dec := k8syaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []runtime.Object
	for doc := 1; ; doc++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
			continue // an empty YAML document
		}
		objs, err := decodeDoc(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		out = append(out, objs...)
	}
}

func decodeDoc(raw []byte) ([]runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return nil, err
	}
	strict := func(v any) error {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	switch {
	case tm.Kind == "List" && tm.APIVersion == "v1":
		var l struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ListMeta   `json:"metadata"`
			Items           []json.RawMessage `json:"items"`
		}
		if err := strict(&l); err != nil {
			return nil, fmt.Errorf("List: %w", err)
		}
		var out []runtime.Object
		for i, it := range l.Items {
			objs, err := decodeDoc(it)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, objs...)
		}
		return out, nil
	case tm.Kind == etcd.KindNamespace && tm.APIVersion == "v1":
		ns := &corev1.Namespace{}
		if err := strict(ns); err != nil {
			return nil, fmt.Errorf("Namespace: %w", err)
		}
		if err := datastore.ValidateNamespace(ns); err != nil {
			return nil, err
		}
		return []runtime.Object{ns}, nil
	case tm.Kind == etcd.KindNetworkPolicy && tm.APIVersion == "networking.k8s.io/v1":
		np := &networkingv1.NetworkPolicy{}
		if err := strict(np); err != nil {
			return nil, fmt.Errorf("NetworkPolicy: %w", err)
		}
		if np.Namespace == "" {
			np.Namespace = DefaultNamespace
		}
		if err := datastore.ValidatePolicy(np); err != nil {
			return nil, err
		}
		return []runtime.Object{np}, nil
	case tm.Kind == etcd.KindClusterNetworkPolicy && (tm.APIVersion == cnp.GroupVersion.String() || tm.APIVersion == "policy.networking.k8s.io/v1alpha2"):
		p := &cnp.ClusterNetworkPolicy{}
		if err := strict(p); err != nil {
			return nil, fmt.Errorf("ClusterNetworkPolicy: %w", err)
		}
		p.Namespace = ""                            // as kubectl: cluster-scoped
		p.APIVersion = cnp.GroupVersion.String()    // the same schema
		p.Status = cnp.ClusterNetworkPolicyStatus{} // written by implementations, not users
		if err := datastore.ValidateClusterPolicy(p); err != nil {
			return nil, err
		}
		return []runtime.Object{p}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: the lab takes v1 Namespace, networking.k8s.io/v1 NetworkPolicy and policy.networking.k8s.io/v1beta1 (or v1alpha2) ClusterNetworkPolicy (and v1 List of them)", tm.APIVersion, tm.Kind)
}

// describe names an object as kubectl does (namespace/x,
// networkpolicy.networking.k8s.io/x,
// clusternetworkpolicy.policy.networking.k8s.io/x).
func describe(obj runtime.Object) string {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return "namespace/" + o.Name
	case *networkingv1.NetworkPolicy:
		return "networkpolicy.networking.k8s.io/" + o.Name
	case *cnp.ClusterNetworkPolicy:
		return "clusternetworkpolicy.policy.networking.k8s.io/" + o.Name
	}
	return fmt.Sprintf("%T", obj)
}

// etcdClient connects to the lab's etcd.
func (l *Lab) etcdClient() (*clientv3.Client, error) {
	if len(l.Etcd.Endpoints) == 0 {
		return nil, fmt.Errorf("lab %s has no etcd endpoints", l.Name)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: l.Etcd.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("lab %s: etcd: %w", l.Name, err)
	}
	return cli, nil
}

func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 15*time.Second)
}

// ensureNamespace creates Namespace ns (labelled with its name, as
// Kubernetes does) unless it exists, and reports whether it did.
func ensureNamespace(ctx context.Context, cli *clientv3.Client, ns string) (bool, error) {
	obj, err := etcd.GetObject(ctx, cli, "", etcd.KindNamespace, "", ns)
	if err != nil || obj != nil {
		return false, err
	}
	_, err = etcd.PutObject(ctx, cli, "", namespaceObject(ns, nil))
	return err == nil, err
}

func namespaceObject(name string, labels map[string]string) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	ns.Labels[datastore.NamespaceNameLabel] = name
	ns.Status.Phase = corev1.NamespaceActive
	return ns
}

// Apply is `lab apply -f`: it creates or replaces every object of r
// (all are decoded and checked before any is written) and says what it
// did on out. A policy's namespace is created when missing.
func (l *Lab) Apply(ctx context.Context, r io.Reader, out io.Writer) error {
	return l.withObjects(ctx, r, func(ctx context.Context, cli *clientv3.Client, objs []runtime.Object) error {
		for _, obj := range objs {
			if np, ok := obj.(*networkingv1.NetworkPolicy); ok {
				made, err := ensureNamespace(ctx, cli, np.Namespace)
				if err != nil {
					return err
				}
				if made {
					fmt.Fprintf(out, "namespace/%s created\n", np.Namespace)
				}
			}
			if ns, ok := obj.(*corev1.Namespace); ok {
				// As the apiserver does: the name label is always there.
				ns = ns.DeepCopy()
				ns.Labels = namespaceObject(ns.Name, ns.Labels).Labels
				ns.Status.Phase = corev1.NamespaceActive
				obj = ns
			}
			created, err := etcd.PutObject(ctx, cli, "", obj)
			if err != nil {
				return err
			}
			verb := "configured"
			if created {
				verb = "created"
			}
			fmt.Fprintf(out, "%s %s\n", describe(obj), verb)
		}
		return nil
	})
}

// withObjects decodes r (every document checked before anything is
// written) and runs fn with them and an etcd client, bounded by opCtx.
func (l *Lab) withObjects(ctx context.Context, r io.Reader, fn func(context.Context, *clientv3.Client, []runtime.Object) error) error {
	objs, err := DecodeObjects(r)
	if err != nil {
		return err
	}
	cli, err := l.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := opCtx(ctx)
	defer cancel()
	return fn(ctx, cli, objs)
}

// Delete is `lab delete -f`: it deletes every object of r. A namespace
// goes with its policies; one that still has lab pods is refused. Objects
// that do not exist are reported and make the result an error (as kubectl
// does), after the others were deleted.
func (l *Lab) Delete(ctx context.Context, r io.Reader, out io.Writer) error {
	return l.withObjects(ctx, r, func(ctx context.Context, cli *clientv3.Client, objs []runtime.Object) error {
		var errs []error
		for _, obj := range objs {
			var ok bool
			var err error
			switch o := obj.(type) {
			case *corev1.Namespace:
				var pods []string
				for _, p := range l.Pods {
					if p.namespace() == o.Name {
						pods = append(pods, p.Name)
					}
				}
				if len(pods) > 0 {
					sort.Strings(pods)
					errs = append(errs, fmt.Errorf("namespace %s still has lab pods %v: `podnet lab pod del` them first", o.Name, pods))
					continue
				}
				if _, err := cli.Delete(ctx, etcd.ObjectsPrefix("")+"networkpolicies/"+o.Name+"/", clientv3.WithPrefix()); err != nil {
					return err
				}
				ok, err = etcd.DeleteObject(ctx, cli, "", etcd.KindNamespace, "", o.Name)
			case *networkingv1.NetworkPolicy:
				ok, err = etcd.DeleteObject(ctx, cli, "", etcd.KindNetworkPolicy, o.Namespace, o.Name)
			case *cnp.ClusterNetworkPolicy:
				ok, err = etcd.DeleteObject(ctx, cli, "", etcd.KindClusterNetworkPolicy, "", o.Name)
			}
			if err != nil {
				return err
			}
			if !ok {
				errs = append(errs, fmt.Errorf("%s not found", describe(obj)))
				continue
			}
			fmt.Fprintf(out, "%s deleted\n", describe(obj))
		}
		return errors.Join(errs...)
	})
}

package lab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/internal/netns"
)

// PodSpec is what `lab pod add` creates.
type PodSpec struct {
	Namespace, Name string
	Node            string
	Labels          map[string]string
	Ports           []corev1.ContainerPort
}

// SplitRef splits "NS/NAME".
func SplitRef(ref string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("pod %q: want NAMESPACE/NAME", ref)
	}
	return ns, name, nil
}

// podNetns names the namespace of pod ns/name: pl-<lab>-<ns>.<name> (a
// namespace name has no '.', so this never collides with another pod or
// with the pl-<lab>-<node>-pN pods of `up`), shortened with a hash of
// ns/name when long.
func podNetns(lab, ns, name string) string {
	s := ns + "." + name
	if len(s) > 40 {
		h := sha256.Sum256([]byte(ns + "/" + name))
		s = s[:23] + "-" + hex.EncodeToString(h[:8])
	}
	return nsPrefix(lab) + s
}

func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lock serialises the commands that change lab.json (pod add/del, label).
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// loadLocked is Load with the lab's lock held until unlock.
func loadLocked(root, name string) (*Lab, func(), error) {
	if err := ValidName(name); err != nil {
		return nil, nil, err
	}
	dir := Dir(root, name)
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err != nil {
		_, lerr := Load(root, name)
		return nil, nil, lerr
	}
	unlock, err := lock(dir)
	if err != nil {
		return nil, nil, err
	}
	l, err := Load(root, name)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return l, unlock, nil
}

// podObject is the Pod object of p before its sandbox is wired.
func (l *Lab) podObject(p *Pod, ports []corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.namespace(), Name: p.Name, Labels: p.Labels,
			UID: types.UID(p.ContainerID), CreationTimestamp: metav1.Now()},
		Spec:   corev1.PodSpec{NodeName: p.Node, Containers: []corev1.Container{{Name: "main", Image: "podnet-lab", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
}

// wire creates p as a kubelet would: the Pod object first (pending), then
// the sandbox netns and CNI ADD, then the object's status with the pod's
// addresses. p is recorded in lab.json before its netns exists, so Down
// finds whatever this leaves.
func (l *Lab) wire(ctx context.Context, cli *clientv3.Client, n *Node, p *Pod, ports []corev1.ContainerPort) error {
	obj := l.podObject(p, ports)
	octx, cancel := opCtx(ctx)
	_, err := etcd.PutObject(octx, cli, "", obj)
	cancel()
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.Ref(), err)
	}
	l.Pods = append(l.Pods, p)
	if err := l.Save(); err != nil {
		return err
	}
	if err := newNS(p.Netns); err != nil {
		return err
	}
	if err := l.addPod(ctx, n, p); err != nil {
		return err
	}
	obj.Status.Phase, obj.Status.HostIP = corev1.PodRunning, n.IP.String()
	obj.Status.HostIPs = []corev1.HostIP{{IP: n.IP.String()}}
	for i, a := range p.IPs {
		if i == 0 {
			obj.Status.PodIP = a.String()
		}
		obj.Status.PodIPs = append(obj.Status.PodIPs, corev1.PodIP{IP: a.String()})
	}
	octx, cancel = opCtx(ctx)
	defer cancel()
	if _, err := etcd.PutObject(octx, cli, "", obj); err != nil {
		return fmt.Errorf("pod %s: status: %w", p.Ref(), err)
	}
	return nil
}

// AddPod is `lab pod add NS/NAME --node NODE`: namespace object on first
// use, Pod object, netns, CNI ADD (with the K8S_POD_* CNI_ARGS), the
// object's status, lab.json. On failure everything it made is undone.
func AddPod(ctx context.Context, root, name string, spec PodSpec) (*Pod, error) {
	l, unlock, err := loadLocked(root, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	p := &Pod{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels, Node: spec.Node,
		Netns: podNetns(l.Name, spec.Namespace, spec.Name), ContainerID: "lab" + randomID()}
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	if err := datastore.ValidatePod(l.podObject(p, spec.Ports)); err != nil {
		return nil, err
	}
	n := l.Node(spec.Node)
	if n == nil {
		var names []string
		for _, n := range l.Nodes {
			names = append(names, n.Name)
		}
		return nil, fmt.Errorf("lab %s has no node %q (have %s)", l.Name, spec.Node, strings.Join(names, ", "))
	}
	for _, q := range l.Pods {
		if q.namespace() == p.Namespace && q.Name == p.Name {
			return nil, fmt.Errorf("pod %s/%s exists (netns %s)", p.Namespace, p.Name, q.Netns)
		}
	}
	cli, err := l.etcdClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	octx, cancel := opCtx(ctx)
	_, err = ensureNamespace(octx, cli, p.Namespace)
	cancel()
	if err != nil {
		return nil, err
	}
	if err := l.wire(ctx, cli, n, p, spec.Ports); err != nil {
		return nil, errors.Join(err, l.unwire(ctx, cli, p))
	}
	return p, nil
}

// unwire undoes wire: CNI DEL, netns, object, lab.json record. It runs
// even when the caller's ctx has ended (a rollback after a timed-out ADD):
// each step keeps its own bound.
func (l *Lab) unwire(ctx context.Context, cli *clientv3.Client, p *Pod) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if n := l.Node(p.Node); n != nil && netns.Exists(NetnsPath(n.Netns)) && netns.Exists(NetnsPath(p.Netns)) {
		c := l.cni(n)
		if list, err := c.Load(agent.NetworkName); err == nil {
			dctx, cancel := opCtx(ctx)
			if err := c.Del(dctx, list, l.attachment(p)); err != nil {
				errs = append(errs, fmt.Errorf("pod %s: CNI DEL: %w", p.Ref(), err))
			}
			cancel()
		}
	}
	if len(errs) > 0 {
		// Keep the record (and netns) so DEL can be retried or Down
		// finds them.
		return errors.Join(errs...)
	}
	if err := netns.Delete(p.Netns); err != nil {
		errs = append(errs, err)
	}
	octx, cancel := opCtx(ctx)
	defer cancel()
	if _, err := etcd.DeleteObject(octx, cli, "", etcd.KindPod, p.namespace(), p.Name); err != nil {
		errs = append(errs, err)
	}
	for i, q := range l.Pods {
		if q == p {
			l.Pods = append(l.Pods[:i], l.Pods[i+1:]...)
			break
		}
	}
	return errors.Join(append(errs, l.Save())...)
}

// DelPod is `lab pod del NS/NAME`: CNI DEL, netns, object, lab.json.
func DelPod(ctx context.Context, root, name, ns, pod string) error {
	l, unlock, err := loadLocked(root, name)
	if err != nil {
		return err
	}
	defer unlock()
	var p *Pod
	for _, q := range l.Pods {
		if q.namespace() == ns && q.Name == pod {
			p = q
		}
	}
	if p == nil {
		return fmt.Errorf("lab %s has no pod %s/%s", l.Name, ns, pod)
	}
	cli, err := l.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return l.unwire(ctx, cli, p)
}

// Label is `lab label pod NS/NAME ...` (kind etcd.KindPod, ref NS/NAME)
// and `lab label namespace NS ...` (etcd.KindNamespace, ref NS).
func Label(ctx context.Context, root, name, kind, ref string, change LabelChange) error {
	l, unlock, err := loadLocked(root, name)
	if err != nil {
		return err
	}
	defer unlock()
	ns, obj := "", ref
	if kind == etcd.KindPod {
		if ns, obj, err = SplitRef(ref); err != nil {
			return err
		}
	}
	if kind == etcd.KindNamespace {
		if _, ok := change.Set[datastore.NamespaceNameLabel]; ok || contains(change.Remove, datastore.NamespaceNameLabel) {
			return fmt.Errorf("label %s is the namespace's name: it cannot be changed", datastore.NamespaceNameLabel)
		}
	}
	cli, err := l.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := opCtx(ctx)
	defer cancel()
	o, err := etcd.GetObject(ctx, cli, "", kind, ns, obj)
	if err != nil {
		return err
	}
	if o == nil {
		return fmt.Errorf("lab %s has no %s %s", l.Name, strings.ToLower(kind), ref)
	}
	m := o.(metav1.Object)
	m.SetLabels(change.Apply(m.GetLabels()))
	if _, err := etcd.PutObject(ctx, cli, "", o); err != nil {
		return err
	}
	if p := l.Pod(ns + "/" + obj); kind == etcd.KindPod && p != nil {
		p.Labels = m.GetLabels()
		return l.Save()
	}
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

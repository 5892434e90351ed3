package etcd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
	"github.com/podnet/podnet/agent/policy"
)

// A watch from a compacted revision fails (and Run then lists again): the
// source never silently misses changes.
func TestObjectWatchCompacted(t *testing.T) {
	e, err := embedded.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := NewObjectSource(cli, "", nil)
	rev, err := o.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for _, n := range []string{"a", "b"} {
		r, err := cli.Put(ctx, ObjectsPrefix("")+"namespaces/"+n, `{"metadata":{"name":"`+n+`"}}`)
		if err != nil {
			t.Fatal(err)
		}
		last = r.Header.Revision
	}
	if _, err := cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	err = o.watch(ctx, rev, func() {})
	if err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	// Run lists again and sees both.
	relistDelay = 10 * time.Millisecond
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	synced := make(chan struct{}, 10)
	go o.Run(rctx, func() { synced <- struct{}{} })
	<-synced
	if got := len(o.Objects().Namespaces); got != 2 {
		t.Fatalf("%d namespaces after the list", got)
	}
}

// TestSnapshotPatch: patching the snapshot per event gives what a
// snapshot rebuilt from all objects gives, and never changes a snapshot
// handed out before.
func TestSnapshotPatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	o := &ObjectSource{objs: map[string]any{}, synced: true}
	mk := func(i int) (string, any) {
		ns, name := fmt.Sprint("ns", i%3), fmt.Sprint("o", i%7)
		switch i % 3 {
		case 0:
			return "namespaces/" + name, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"v": fmt.Sprint(r.IntN(9))}}}
		case 1:
			return "pods/" + ns + "/" + name, &policy.Pod{Namespace: ns, Name: name}
		default:
			return "networkpolicies/" + ns + "/" + name, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		}
	}
	for step := range 2000 {
		first := o.Objects()
		before := fmt.Sprint(first)
		k, obj := mk(r.IntN(40))
		old := o.objs[k]
		if r.IntN(3) == 0 {
			delete(o.objs, k)
			obj = nil
		} else {
			o.objs[k] = obj
		}
		o.patch(old, obj)
		got := o.Objects()
		o.snap = nil
		want := o.Objects()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: patched %v, rebuilt %v", step, got, want)
		}
		if fmt.Sprint(first) != before {
			t.Fatalf("step %d: an earlier snapshot changed", step)
		}
	}
}

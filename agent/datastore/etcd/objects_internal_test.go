package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
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

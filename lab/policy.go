package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/policy"
)

// PolicyModel reads the lab's namespaces, pods and NetworkPolicies from
// its etcd: the same objects, through the same source, the agents compile.
func (l *Lab) PolicyModel(ctx context.Context) (policy.Model, error) {
	cli, err := l.etcdClient()
	if err != nil {
		return policy.Model{}, err
	}
	defer cli.Close()
	src := etcd.NewObjectSource(cli, "", nil)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() { _ = src.Run(rctx, func() {}) }()
	for !src.Synced() {
		select {
		case <-rctx.Done():
			return policy.Model{}, fmt.Errorf("lab %s: reading policy objects from etcd: %w", l.Name, rctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	o := src.Objects()
	return policy.ModelFromObjects(o.Namespaces, o.Pods, o.Policies), nil
}

package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/podnet/podnet/agent/datastore"
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
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	o, err := datastore.ReadObjects(rctx, etcd.NewObjectSource(cli, "", nil))
	if err != nil {
		return policy.Model{}, fmt.Errorf("lab %s: %w", l.Name, err)
	}
	return o.Model(), nil
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Demo brings a lab up (o's defaults: 2 nodes x 2 pods over vxlan), shows
// it, runs the full check and takes it down again, whatever happened.
func Demo(ctx context.Context, o Options) (err error) {
	if o.Name == "" {
		o.Name = "demo"
	}
	if err := o.defaults(); err != nil {
		return err
	}
	out := o.Out
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	if _, serr := Load(o.Root, o.Name); serr == nil {
		return fmt.Errorf("lab %q exists: `podnet lab down --name %s` first", o.Name, o.Name)
	}
	start := time.Now()
	say("== podnet lab demo: %d nodes x %d pods, %s backend, in network namespaces (the root namespace is not touched)", o.Nodes, o.PodsPerNode, o.Backend)
	defer func() {
		say("\n== down: DEL every pod through CNI, stop the agents and etcd, delete the namespaces")
		err = errors.Join(err, Down(o.Root, o.Name, out))
		if err == nil {
			say("\n== done in %s", time.Since(start).Round(100*time.Millisecond))
		}
	}()
	say("\n== up: fabric, etcd, one podnet agent per node; pods added by libcni exec'ing the podnet plugin with the conflist each agent wrote")
	l, err := Up(ctx, o)
	if err != nil {
		return err
	}
	say("\n== status (podnet lab status)")
	if err := l.Status(out, false); err != nil {
		return err
	}
	say("\n== check (podnet lab check): every pod and node to every other, and each pod to a host outside the cluster")
	_, err = l.Check(out)
	return err
}

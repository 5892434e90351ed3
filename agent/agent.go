// Package agent is podnet's node agent (Flannel-like): it leases this
// node's pod subnets from the datastore, publishes how to reach them, and
// keeps the node's kernel in line with every other node's record.
//
// The agent is a reconcile loop. Datastore watch events and a resync timer
// only mark the state dirty; one loop then lists all nodes, computes the
// whole desired state (agent/overlay, pure) and lets agent/kernel apply the
// difference. Errors are logged and retried on the next round; the loop
// never exits for them. Stopping the agent leaves the datapath and the
// lease alone (the lease simply stops being renewed), so a restart adopts
// what it finds and pods keep their connectivity meanwhile.
//
// It owns: this node's datastore records (through a datastore.Store), the
// node state file for the CNI plugin (agent/nodestate), and, through
// agent/kernel, the podnet.<VNI> device, podnet routes and the podnet-nat
// table in the namespace it is given. It must not touch pods' namespaces or
// any other kernel object.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/kernel"
	"github.com/podnet/podnet/agent/metrics"
	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/agent/overlay"
)

// Agent runs the node agent for one node.
type Agent struct {
	cfg   Config
	store datastore.Store
	log   *slog.Logger
	node  *kernel.Node

	local    overlay.Local
	snap     datastore.Snapshot // last good read of the store
	problems string
	rejected string
	rendered string

	objects datastore.ObjectSource // nil: no network policy
	metrics *metrics.Metrics       // nil: none

	mu     sync.Mutex
	state  overlay.State
	syncs  int
	lastOK bool
}

// EnablePolicy makes the agent enforce NetworkPolicy with the objects of
// src (call before Run).
func (a *Agent) EnablePolicy(src datastore.ObjectSource) { a.objects = src }

// SetMetrics makes the agent report into m (call before Run).
func (a *Agent) SetMetrics(m *metrics.Metrics) { a.metrics = m }

// New checks cfg and opens the node's namespace. store is used as is and
// closed by the caller.
func New(cfg Config, store datastore.Store, log *slog.Logger) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeName)
	n, err := kernel.Open(cfg.NetNS, log)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, store: store, log: log, node: n}, nil
}

// State returns the desired state of the last sync and how many syncs ran.
func (a *Agent) State() (overlay.State, int, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state, a.syncs, a.lastOK
}

// Local returns this node as the agent resolved it (valid once Run has
// leased).
func (a *Agent) Local() overlay.Local {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.local
}

func (a *Agent) pools() []datastore.Pool {
	var out []datastore.Pool
	for _, c := range a.cfg.ClusterCIDRs {
		l := a.cfg.SubnetLenV4
		if c.Addr().Is6() {
			l = a.cfg.SubnetLenV6
		}
		out = append(out, datastore.Pool{CIDR: c, SubnetLen: l})
	}
	return out
}

// retry runs fn until it succeeds or ctx ends, backing off up to 10s.
func (a *Agent) retry(ctx context.Context, what string, fn func() error) error {
	wait := 200 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		a.log.Warn(what+" failed, retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

// Run leases, publishes, watches and reconciles until ctx is done. It
// returns nil on a clean stop and leaves the datapath in place.
func (a *Agent) Run(ctx context.Context) error {
	defer a.node.Close()
	cfg := a.cfg
	name, cidr := cfg.underlaySpec()
	var ul kernel.Underlay
	if err := a.retry(ctx, "find underlay", func() (err error) {
		ul, err = a.node.FindUnderlay(name, cidr)
		return err
	}); err != nil {
		return nil
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = ul.MTU
		if cfg.Backend != overlay.HostGW {
			mtu -= overlay.OverheadFor(ul.IPs[0])
		}
	}
	l := overlay.Local{
		Name: cfg.NodeName, Backend: cfg.Backend, UnderlayDev: ul.Dev, UnderlayIPs: ul.IPs, UnderlayNets: ul.Nets,
		VNI: cfg.VNI, Port: cfg.Port, MTU: mtu, ClusterCIDRs: cfg.ClusterCIDRs,
	}
	if cfg.Backend != overlay.HostGW {
		l.VtepMAC = overlay.VtepMAC(cfg.NodeName, cfg.VNI).String()
	}
	a.log.Info("underlay", "dev", ul.Dev, "ips", ul.IPs, "mtu", ul.MTU, "podMTU", mtu, "backend", cfg.Backend)

	lease, l, err := a.lease(ctx, l)
	if err != nil {
		return nil // ctx done
	}
	if a.establish(ctx, l) != nil || a.publish(ctx, l) != nil {
		return nil // ctx done
	}
	if a.objects != nil {
		// Before the conflist: a pod of a namespace with policies can
		// start only once the registration socket answers.
		if err := a.startPolicy(ctx); err != nil {
			return err
		}
	}
	if a.writeConflist(ctx) != nil {
		return nil // ctx done
	}
	expired := lease.Expired
	// relet delivers a re-lease (store calls only) running in the
	// background after the lease was lost (the datastore unreachable past
	// the TTL): meanwhile the loop keeps reconciling from the last node
	// list it had, so the datapath stays and drift is still repaired during
	// a datastore outage. Kernel and files are only touched by this loop.
	var relet chan released

	watch, _ := a.store.Watch(ctx)
	tick := time.NewTicker(cfg.ResyncInterval)
	defer tick.Stop()
	dirty := true
	for {
		if dirty {
			a.sync(ctx)
			dirty = false
		}
		select {
		case <-ctx.Done():
			a.log.Info("stopping; datapath and lease left in place")
			return nil
		case <-tick.C:
			dirty = true
		case <-expired:
			a.log.Warn("datastore lease lost; leasing again, datapath left as it is")
			expired = nil
			relet = make(chan released, 1)
			go func(l overlay.Local) {
				lease, l, err := a.lease(ctx, l)
				if err == nil {
					err = a.publish(ctx, l)
				}
				relet <- released{lease, l, err}
			}(a.Local())
		case r := <-relet:
			relet = nil
			if r.err != nil || a.establish(ctx, r.local) != nil || a.writeConflist(ctx) != nil {
				continue // ctx done
			}
			expired = r.lease.Expired
			dirty = true
		case ev, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					continue
				}
				watch, _ = a.store.Watch(ctx)
			} else {
				a.log.Debug("datastore event", "type", ev.Type, "name", ev.Name)
			}
			dirty = true
			drain(watch)
		}
	}
}

// drain swallows queued events: one sync covers them all.
func drain(ch <-chan datastore.Event) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// released is the outcome of a background re-lease.
type released struct {
	lease *datastore.Lease
	local overlay.Local
	err   error
}

// lease gets this node's subnets from the store (preferring l's, else
// those of the node state file of a previous run), retrying until it works
// or ctx ends. It returns l with the leased subnets.
func (a *Agent) lease(ctx context.Context, l overlay.Local) (*datastore.Lease, overlay.Local, error) {
	var lease *datastore.Lease
	req := datastore.LeaseRequest{Node: a.cfg.NodeName, Pools: a.pools(), Preferred: l.Subnets}
	if len(req.Preferred) == 0 {
		if prev, err := nodestate.Read(a.cfg.StateDir); err == nil && prev.Node == a.cfg.NodeName {
			req.Preferred = prev.Subnets
		}
	}
	if err := a.retry(ctx, "lease subnets", func() (err error) {
		lease, err = a.store.Lease(ctx, req)
		return err
	}); err != nil {
		return nil, l, err
	}
	if len(l.Subnets) > 0 && !slices.Equal(l.Subnets, lease.Subnets) {
		a.log.Error("leased subnets changed: pods on the old subnets lose connectivity", "old", l.Subnets, "new", lease.Subnets)
	}
	l.Subnets = lease.Subnets
	a.log.Info("leased", "subnets", l.Subnets)
	return lease, l, nil
}

// establish makes l (with its leased subnets) the agent's node: the node
// state file the plugin reads and, for VXLAN, the device, so the MAC the
// agent publishes is already live. It retries until done or ctx ends.
func (a *Agent) establish(ctx context.Context, l overlay.Local) error {
	a.mu.Lock()
	a.local = l
	a.mu.Unlock()
	ns := nodestate.State{Node: l.Name, Subnets: l.Subnets, MTU: l.MTU, ClusterCIDRs: l.ClusterCIDRs, Backend: l.Backend}
	for _, s := range l.Subnets {
		ns.Gateways = append(ns.Gateways, nodestate.GatewayFor(s))
	}
	if err := a.retry(ctx, "write node state", func() error { return nodestate.Write(a.cfg.StateDir, ns) }); err != nil {
		return err
	}
	if st := overlay.Compute(l, datastore.Snapshot{}); st.Device != nil {
		if _, err := a.node.EnsureDevice(*st.Device); err != nil {
			a.log.Warn("vxlan device", "err", err)
		}
	}
	return nil
}

// publish records this node in the store under the current lease,
// retrying until it works or ctx ends.
func (a *Agent) publish(ctx context.Context, l overlay.Local) error {
	info := datastore.NodeInfo{Name: l.Name, UnderlayIPs: l.UnderlayIPs, VtepMAC: l.VtepMAC, Subnets: l.Subnets, Backend: l.Backend}
	return a.retry(ctx, "publish node", func() error { return a.store.Publish(ctx, info) })
}

// writeConflist writes the CNI conflist (if configured) last: node.json,
// the VXLAN device and the node's record exist, so a runtime that sees the
// conflist can add pods.
func (a *Agent) writeConflist(ctx context.Context) error {
	if a.cfg.CNIConfDir == "" {
		return nil
	}
	return a.retry(ctx, "write CNI conflist", func() error { return WriteConflist(a.cfg.CNIConfDir, a.cfg.StateDir) })
}

// storeTimeout bounds each datastore call of a sync, so an unreachable
// datastore delays reconciling by at most this, never stops it.
const storeTimeout = 5 * time.Second

func (a *Agent) sync(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, storeTimeout)
	snap, err := a.store.List(lctx)
	cancel()
	if err != nil {
		a.log.Warn("list nodes", "err", err)
	} else {
		a.snap = snap
	}
	l := a.Local()
	if err == nil {
		a.repairOwnRecord(ctx, l)
	}
	st := overlay.Compute(l, a.snap)
	if p := strings.Join(st.Problems, "\n"); p != a.problems {
		a.problems = p
		for _, pr := range st.Problems {
			a.log.Warn("unreachable", "problem", pr)
		}
	}
	if r := strings.Join(st.Rejected, "\n"); r != a.rejected {
		a.rejected = r
		for _, why := range st.Rejected {
			a.log.Warn("node record refused", "reason", why)
		}
	}
	if txt := st.Render(); txt != a.rendered {
		a.rendered = txt
		a.log.Info("desired state changed", "nodes", len(a.snap.Nodes), "routes", len(st.Routes), "fdb", len(st.FDB), "rejected", len(st.Rejected))
		a.log.Debug("desired state", "text", txt)
	}
	v4 := slices.ContainsFunc(l.ClusterCIDRs, func(p netip.Prefix) bool { return p.Addr().Is4() })
	v6 := slices.ContainsFunc(l.ClusterCIDRs, func(p netip.Prefix) bool { return p.Addr().Is6() })
	t0 := time.Now()
	aerr := errors.Join(a.node.EnableForwarding(v4, v6), a.node.Apply(st))
	if aerr != nil {
		a.log.Warn("reconcile incomplete, retrying on the next round", "err", aerr)
	}
	if m := a.metrics; m != nil {
		m.ObserveSync("overlay", time.Since(t0), aerr)
		m.Nodes.Set(float64(len(a.snap.Nodes)))
		m.Routes.Set(float64(len(st.Routes)))
		m.SetReady(aerr == nil)
	}
	a.mu.Lock()
	a.state, a.lastOK = st, aerr == nil
	a.syncs++
	a.mu.Unlock()
}

// repairOwnRecord publishes this node's record again when the store has
// none for it, an unreadable one, or one that says something else than the
// agent published (someone removed or rewrote it): the other nodes route to
// this node by it. A bad record of another node never stops this.
func (a *Agent) repairOwnRecord(ctx context.Context, l overlay.Local) {
	want := datastore.NodeInfo{Name: l.Name, UnderlayIPs: l.UnderlayIPs, VtepMAC: l.VtepMAC, Subnets: l.Subnets, Backend: l.Backend}
	if got, ok := a.snap.Node(l.Name); ok && recordHolds(got, want) {
		return
	}
	a.log.Warn("own node record missing or altered in the datastore: publishing it again")
	pctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := a.store.Publish(pctx, want); err != nil {
		a.log.Warn("republish own record", "err", err)
	}
}

// recordHolds says whether the stored record got carries what want says:
// the same underlay addresses and VTEP MAC, and every one of want's
// subnets (a store may add the node's other pod CIDRs).
func recordHolds(got, want datastore.NodeInfo) bool {
	return slices.Equal(got.UnderlayIPs, want.UnderlayIPs) && strings.EqualFold(got.VtepMAC, want.VtepMAC) &&
		!slices.ContainsFunc(want.Subnets, func(p netip.Prefix) bool { return !slices.Contains(got.Subnets, p) })
}

// String describes the agent for logs.
func (a *Agent) String() string { return fmt.Sprintf("agent(%s)", a.cfg.NodeName) }

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/metrics"
	"github.com/podnet/podnet/agent/podreg"
	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
)

// policyEngine is the agent's NetworkPolicy loop: it keeps the model
// (the datastore's namespaces, pods and policies, plus the addresses the
// CNI plugin registered for this node's new pods), compiles it for this
// node (agent/policy, pure) and has the writer program the difference
// (agent/policykernel). It answers the plugin's registrations
// (agent/podreg) once the pod's policy is in force.
//
// Fail-safe rules: nothing is compiled or applied before the source's
// first complete list (an empty cache would lift every policy), and a
// failed apply is retried; the table is never flushed.
type policyEngine struct {
	node     string
	stateDir string
	src      datastore.ObjectSource
	compile  func(policy.Model, string) policy.Ruleset
	apply    func(policy.Ruleset) error
	log      *slog.Logger
	metrics  *metrics.Metrics

	kick chan struct{}

	mu       sync.Mutex
	regs     map[string]podreg.Registration // containerID/ifName ->
	gen      uint64                         // bumped by every change
	applied  uint64                         // gen in force in the kernel
	known    map[string]bool                // pods (ns/name) the applied model had
	lastErr  error
	done     chan struct{} // closed and replaced after every apply
	nsList   []string      // namespaces with policies, as last written
	wrote    bool
	rs       policy.Ruleset // last applied
	compiled bool           // rs holds a compile of gen applied

	// denied accumulates the per-pod drop counters into monotonic
	// per-policy totals (a pod's chain, and its counter, may go and come).
	deniedMu   sync.Mutex
	lastDrops  map[string]uint64
	deniedSums map[[2]string]uint64
}

func newPolicyEngine(node, stateDir string, src datastore.ObjectSource, compile func(policy.Model, string) policy.Ruleset,
	apply func(policy.Ruleset) error, log *slog.Logger) *policyEngine {
	return &policyEngine{
		node: node, stateDir: stateDir, src: src, compile: compile, apply: apply, log: log.With("part", "policy"),
		kick: make(chan struct{}, 1), regs: map[string]podreg.Registration{}, done: make(chan struct{}),
	}
}

func (e *policyEngine) changed() {
	e.mu.Lock()
	e.gen++
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run serves registrations and reconciles until ctx is done.
func (e *policyEngine) Run(ctx context.Context, resync time.Duration) {
	go func() {
		for ctx.Err() == nil {
			if err := e.src.Run(ctx, e.changed); err != nil && ctx.Err() == nil {
				e.log.Warn("policy objects source stopped, restarting", "err", err)
				time.Sleep(time.Second)
			}
		}
	}()
	go func() {
		for ctx.Err() == nil {
			if err := podreg.Serve(ctx, e.stateDir, e); err != nil && ctx.Err() == nil {
				e.log.Warn("registration socket", "err", err)
				time.Sleep(time.Second)
			}
		}
	}()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		case <-tick.C:
		}
		e.sync()
	}
}

// sync compiles and applies once, if the source has listed.
func (e *policyEngine) sync() {
	if !e.src.Synced() {
		return
	}
	e.mu.Lock()
	gen := e.gen
	if e.compiled && gen == e.applied {
		// A resync with nothing changed: apply what is in force again (the
		// writer's diff is empty unless the kernel lost something) without
		// compiling the whole node anew.
		rs := e.rs
		e.mu.Unlock()
		if err := e.apply(rs); err != nil {
			e.log.Warn("policy re-apply failed", "err", err)
		}
		return
	}
	regs := make([]podreg.Registration, 0, len(e.regs))
	for _, r := range e.regs {
		regs = append(regs, r)
	}
	e.mu.Unlock()

	t0 := time.Now()
	objs := e.src.Objects()
	t1 := time.Now()
	m := modelOf(objs, e.node, regs)
	t2 := time.Now()
	rs := e.compile(m, e.node)
	t3 := time.Now()
	err := e.apply(rs)
	e.observe(objs, rs, time.Since(t0), err)
	if err != nil {
		e.log.Warn("policy apply failed, retrying", "err", err)
		go func() { time.Sleep(200 * time.Millisecond); e.changed() }()
	} else {
		e.log.Debug("policy applied", "pods", len(rs.Pods), "took", time.Since(t0), "objects", t1.Sub(t0),
			"model", t2.Sub(t1), "compile", t3.Sub(t2), "apply", time.Since(t3))
	}
	nsList := policyNamespaces(objs)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastErr = err
	if err == nil {
		e.rs, e.compiled = rs, true
		e.applied = max(e.applied, gen)
		e.known = map[string]bool{}
		for _, p := range m.Pods {
			e.known[p.Key()] = true
		}
	}
	if !e.wrote || !slices.Equal(nsList, e.nsList) {
		if werr := podreg.WriteNamespaces(e.stateDir, nsList); werr != nil {
			e.log.Warn("write policy namespaces", "err", werr)
		} else {
			e.nsList, e.wrote = nsList, true
		}
	}
	close(e.done)
	e.done = make(chan struct{})
}

// Register records r and, when r.Wait, returns once a model holding the pod
// (its labels from the datastore and r's addresses) is in force.
func (e *policyEngine) Register(ctx context.Context, r podreg.Registration) error {
	e.mu.Lock()
	e.regs[r.ContainerID+"/"+r.IfName] = r
	e.mu.Unlock()
	e.changed()
	if !r.Wait {
		return nil
	}
	e.mu.Lock()
	want := e.gen
	e.mu.Unlock()
	for {
		e.mu.Lock()
		ok := e.applied >= want && e.known[r.Key()]
		done, lastErr, applied := e.done, e.lastErr, e.applied >= want
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			switch {
			case !e.src.Synced():
				return fmt.Errorf("pod %s: the agent has not read the cluster's policies yet", r.Key())
			case !applied && lastErr != nil:
				return fmt.Errorf("pod %s: programming its policy failed: %v", r.Key(), lastErr)
			case applied:
				return fmt.Errorf("pod %s is not in the datastore yet: its labels, and so its policy, are unknown", r.Key())
			default:
				return fmt.Errorf("pod %s: its policy is not programmed yet", r.Key())
			}
		}
	}
}

// Unregister forgets an attachment (CNI DEL).
func (e *policyEngine) Unregister(containerID, ifName string) {
	e.mu.Lock()
	_, ok := e.regs[containerID+"/"+ifName]
	delete(e.regs, containerID+"/"+ifName)
	e.mu.Unlock()
	if ok {
		e.changed()
	}
}

// policyNamespaces are the namespaces holding NetworkPolicies, and those
// whose pods a ClusterNetworkPolicy's subject may select (by the
// namespace's labels; a subject without a field or with a selector that
// does not parse counts every namespace), sorted: the plugin makes their
// new pods wait for their policy.
func policyNamespaces(o datastore.Objects) []string {
	var out []string
	for _, p := range o.Policies {
		out = append(out, p.Namespace)
	}
	for _, cp := range o.ClusterPolicies {
		var ls *metav1.LabelSelector
		if s := cp.Spec.Subject; s.Namespaces != nil {
			ls = s.Namespaces
		} else if s.Pods != nil {
			ls = &s.Pods.NamespaceSelector
		}
		sel, err := metav1.LabelSelectorAsSelector(ls)
		for _, ns := range o.Namespaces {
			if ls == nil || err != nil || sel.Matches(labels.Set(ns.Labels)) {
				out = append(out, ns.Name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// modelOf builds the compiler's input: the datastore's objects, with the
// addresses this node's plugin registered taking precedence for its pods
// (the datastore learns a pod's IPs only after ADD returns).
func modelOf(o datastore.Objects, node string, regs []podreg.Registration) policy.Model {
	m := o.Model() // finished pods are not in o.Pods
	byKey := map[string]podreg.Registration{}
	for _, r := range regs {
		byKey[r.Key()] = r
	}
	for i := range m.Pods {
		if r, ok := byKey[m.Pods[i].Key()]; ok {
			m.Pods[i].IPs = slices.Clone(r.IPs)
			m.Pods[i].Node = node
		}
	}
	return m
}

// observe reports one pass into the metrics.
func (e *policyEngine) observe(o datastore.Objects, rs policy.Ruleset, took time.Duration, err error) {
	m := e.metrics
	if m == nil {
		return
	}
	m.ObserveSync("policy", took, err)
	m.Objects.WithLabelValues("namespaces").Set(float64(len(o.Namespaces)))
	m.Objects.WithLabelValues("pods").Set(float64(len(o.Pods)))
	m.Objects.WithLabelValues("networkpolicies").Set(float64(len(o.Policies)))
	m.Objects.WithLabelValues("clusternetworkpolicies").Set(float64(len(o.ClusterPolicies)))
	in, eg := 0, 0
	for _, p := range rs.Pods {
		if p.IngressChain != "" {
			in++
		}
		if p.EgressChain != "" {
			eg++
		}
	}
	m.IsolatedPods.WithLabelValues("ingress").Set(float64(in))
	m.IsolatedPods.WithLabelValues("egress").Set(float64(eg))
	m.SetElements.Set(float64(rs.Elements()))
}

// startPolicy opens the policy table writer (adopting what a previous agent
// programmed: nothing is flushed) and starts the policy loop.
func (a *Agent) startPolicy(ctx context.Context) error {
	var opts []policykernel.Option
	if g := a.cfg.PolicyLogGroup; g >= 0 && g <= 65535 {
		opts = append(opts, policykernel.WithNFLOG(uint16(g)))
	}
	w, err := policykernel.Open(a.node.NSFd(), a.log.With("part", "policy-kernel"), opts...)
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	pc := policy.NewCompiler()
	apply := func(rs policy.Ruleset) error {
		st, err := w.Apply(rs)
		if err == nil && (st.ElementsAdded+st.ElementsRemoved+st.ChainsAdded+st.ChainsRemoved) > 0 {
			reused, redone := pc.Reused()
			a.log.Debug("policy programmed", "stats", fmt.Sprintf("%+v", st), "namespacesReused", reused, "namespacesCompiled", redone)
		}
		return err
	}
	e := newPolicyEngine(a.cfg.NodeName, a.cfg.StateDir, a.objects, pc.Compile, apply, a.log)
	e.metrics = a.metrics
	if err := a.metrics.RegisterDenied(func() ([]metrics.Denied, error) {
		drops, err := w.Dropped()
		if err != nil {
			return nil, err
		}
		return e.denied(drops), nil
	}); err != nil {
		a.log.Warn("denied-packets metric", "err", err)
	}
	go func() {
		defer w.Close()
		e.Run(ctx, a.cfg.ResyncInterval)
	}()
	return nil
}

// denied folds the kernel's per-chain drop counters (profile chain name ->
// packets; a profile's counter counts the drops of every pod sharing it)
// into monotonic totals per isolating policy and direction (from the
// chain's "ingress-" or "egress-" prefix).
func (e *policyEngine) denied(drops map[string]uint64) []metrics.Denied {
	e.mu.Lock()
	owners := map[string][]string{} // profile chain -> isolating policies
	for _, p := range e.rs.Profiles {
		owners[p.Name] = p.Policies
	}
	e.mu.Unlock()
	e.deniedMu.Lock()
	defer e.deniedMu.Unlock()
	if e.deniedSums == nil {
		e.deniedSums, e.lastDrops = map[[2]string]uint64{}, map[string]uint64{}
	}
	for chain, n := range drops {
		delta := n
		if last, ok := e.lastDrops[chain]; ok && n >= last {
			delta = n - last
		}
		e.lastDrops[chain] = n
		dir := "ingress"
		if strings.HasPrefix(chain, "egress-") {
			dir = "egress"
		}
		for _, pol := range owners[chain] {
			e.deniedSums[[2]string{pol, dir}] += delta
		}
	}
	for chain := range e.lastDrops {
		if _, ok := drops[chain]; !ok {
			delete(e.lastDrops, chain)
		}
	}
	out := make([]metrics.Denied, 0, len(e.deniedSums))
	for k, n := range e.deniedSums {
		out = append(out, metrics.Denied{Policy: k[0], Direction: k[1], Packets: n})
	}
	slices.SortFunc(out, func(a, b metrics.Denied) int { return strings.Compare(a.Policy+a.Direction, b.Policy+b.Direction) })
	return out
}

package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/podreg"
	"github.com/podnet/podnet/agent/policy"
)

// fakeObjects is an ObjectSource the test drives.
type fakeObjects struct {
	mu      sync.Mutex
	objs    datastore.Objects
	synced  bool
	changed func()
	ready   chan struct{}
}

func (f *fakeObjects) Run(ctx context.Context, changed func()) error {
	f.mu.Lock()
	f.changed = changed
	f.mu.Unlock()
	close(f.ready)
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeObjects) Objects() datastore.Objects {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.objs
}

func (f *fakeObjects) Synced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

func (f *fakeObjects) set(fn func(o *datastore.Objects)) {
	f.mu.Lock()
	fn(&f.objs)
	f.synced = true
	ch := f.changed
	f.mu.Unlock()
	ch()
}

// sourcePod is a pod as an object source keeps it.
func sourcePod(p *corev1.Pod) *policy.Pod {
	v := policy.PodFromAPI(p)
	return &v
}

func apiPod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}}, Spec: corev1.PodSpec{NodeName: node}}
}

// TestPolicyEngineRegistration: a registration that asks to wait is
// answered only once a model with the pod (datastore labels, registered
// address) is applied; before the source's first list nothing is applied;
// the namespaces file follows the policies.
func TestPolicyEngineRegistration(t *testing.T) {
	dir := t.TempDir()
	src := &fakeObjects{ready: make(chan struct{})}
	var mu sync.Mutex
	var applied []policy.Model
	compile := func(m policy.Model, node string) policy.Ruleset {
		mu.Lock()
		applied = append(applied, m)
		mu.Unlock()
		return policy.Ruleset{Node: node}
	}
	fail := true
	apply := func(policy.Ruleset) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			return errors.New("kernel says no")
		}
		return nil
	}
	e := newPolicyEngine("n1", dir, src, compile, apply, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx, time.Hour)
	<-src.ready

	reg := podreg.Registration{ContainerID: "c1", IfName: "eth0", Namespace: "ns1", Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.7")}, Wait: true}
	// Not synced: the wait ends with the reason.
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := e.Register(rctx, reg)
	rcancel()
	if err == nil || !strings.Contains(err.Error(), "not read the cluster's policies") {
		t.Fatalf("before the first list: %v", err)
	}
	mu.Lock()
	n := len(applied)
	mu.Unlock()
	if n != 0 {
		t.Fatalf("compiled %d times before the source listed", n)
	}

	// Synced, but the pod is not in the datastore: still waiting.
	src.set(func(o *datastore.Objects) {
		o.Namespaces = []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "ns1"}}}
		o.Policies = []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "deny"}}}
	})
	rctx, rcancel = context.WithTimeout(ctx, 500*time.Millisecond)
	err = e.Register(rctx, reg)
	rcancel()
	if err == nil || !strings.Contains(err.Error(), "not in the datastore yet") {
		t.Fatalf("unknown pod: %v", err)
	}
	if has, known, _ := podreg.HasPolicies(dir, "ns1"); !has || !known {
		t.Errorf("namespaces file: ns1 has policies: %v %v", has, known)
	}

	// The pod object appears while the plugin waits: answered.
	errc := make(chan error, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		errc <- e.Register(rctx, reg)
	}()
	time.Sleep(50 * time.Millisecond)
	src.set(func(o *datastore.Objects) { o.Pods = []*policy.Pod{sourcePod(apiPod("ns1", "a", "n1"))} })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	last := applied[len(applied)-1]
	mu.Unlock()
	if len(last.Pods) != 1 || last.Pods[0].Node != "n1" || len(last.Pods[0].IPs) != 1 || last.Pods[0].IPs[0] != reg.IPs[0] {
		t.Errorf("model pods %+v: want ns1/a on n1 with the registered address", last.Pods)
	}

	// Policies gone clear the file (finished pods never reach the
	// model: the sources leave them out, tested with each source).
	src.set(func(o *datastore.Objects) {
		o.Pods = append(o.Pods, sourcePod(apiPod("ns1", "other", "n2")))
		o.Policies = nil
	})
	if err := e.Register(ctx, podreg.Registration{ContainerID: "c2", IfName: "eth0", Namespace: "ns1", Name: "a", IPs: reg.IPs, Wait: true}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	last = applied[len(applied)-1]
	mu.Unlock()
	if len(last.Pods) != 2 {
		t.Errorf("model pods: %+v", last.Pods)
	}
	if has, known, _ := podreg.HasPolicies(dir, "ns1"); has || !known {
		t.Errorf("namespaces file after the policy went: %v %v", has, known)
	}

	// A resync with nothing changed applies again without compiling.
	mu.Lock()
	n = len(applied)
	mu.Unlock()
	e.sync()
	mu.Lock()
	if len(applied) != n {
		t.Errorf("a resync without changes compiled again (%d compiles, was %d)", len(applied), n)
	}
	mu.Unlock()
}

// TestDeniedTotals: per-chain drop counters fold into monotonic totals per
// isolating policy and direction, across a chain that is made again.
func TestDeniedTotals(t *testing.T) {
	e := newPolicyEngine("n1", t.TempDir(), &fakeObjects{}, nil, nil, slog.New(slog.DiscardHandler))
	e.rs = policy.Ruleset{
		Pods: []policy.PodRules{{ID: "aaa", IngressChain: "ingress-aaa", EgressChain: "egress-bbb"}},
		Profiles: []policy.Profile{
			{Name: "egress-bbb", Egress: true, Policies: []string{"x/p2"}},
			{Name: "ingress-aaa", Policies: []string{"x/p1", "x/p2"}},
		},
	}
	get := func(drops map[string]uint64) map[string]uint64 {
		out := map[string]uint64{}
		for _, d := range e.denied(drops) {
			out[d.Policy+" "+d.Direction] = d.Packets
		}
		return out
	}
	got := get(map[string]uint64{"ingress-aaa": 5, "egress-bbb": 2})
	if got["x/p1 ingress"] != 5 || got["x/p2 ingress"] != 5 || got["x/p2 egress"] != 2 {
		t.Fatalf("first read: %v", got)
	}
	got = get(map[string]uint64{"ingress-aaa": 7, "egress-bbb": 2})
	if got["x/p1 ingress"] != 7 || got["x/p2 egress"] != 2 {
		t.Fatalf("second read: %v", got)
	}
	// The chain was made again (counter restarted at 1): totals grow on.
	got = get(map[string]uint64{"ingress-aaa": 1})
	if got["x/p1 ingress"] != 8 || got["x/p2 egress"] != 2 {
		t.Fatalf("after the chain was remade: %v", got)
	}
}

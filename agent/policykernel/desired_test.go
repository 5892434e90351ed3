package policykernel

import (
	"net/netip"
	"testing"

	"github.com/podnet/podnet/agent/policy"
)

// BenchmarkDesiredOnePodChange builds the desired state of 10,000 pods
// from the previous one, one pod changing each time (the CPU part of a
// one-pod Apply).
func BenchmarkDesiredOnePodChange(b *testing.B) {
	rs := scaleRuleset(10000, 500, 1500)
	sigs := map[string]string{}
	prev, err := desired(&rs, nil, sigs, -1)
	if err != nil {
		b.Fatal(err)
	}
	for n, cs := range prev.chains {
		sigs[n] = cs.sig
	}
	ch := onePodChange(rs, 17)
	for i := 0; b.Loop(); i++ {
		r := &rs
		if i%2 == 0 {
			r = &ch
		}
		if prev, err = desired(r, prev, sigs, -1); err != nil {
			b.Fatal(err)
		}
	}
}

// Building a desired state from the previous one gives the same maps as
// building it from scratch, and an error leaves the previous one as it
// was.
func TestDesiredIncremental(t *testing.T) {
	rs := scaleRuleset(200, 20, 30)
	prev, err := desired(&rs, nil, map[string]string{}, -1)
	if err != nil {
		t.Fatal(err)
	}
	steps := []policy.Ruleset{onePodChange(rs, 3), rs, onePodChange(rs, 5)}
	gone := rs
	gone.Pods = append(gone.Pods[:7:7], gone.Pods[8:]...)
	swapped := gone
	swapped.Pods = append([]policy.PodRules(nil), gone.Pods...)
	swapped.Pods[0].IPs = rs.Pods[7].IPs // pod 7's addresses go to pod 0
	steps = append(steps, gone, swapped, rs)
	for k, r := range steps {
		next, err := desired(&r, prev, map[string]string{}, -1)
		if err != nil {
			t.Fatalf("step %d: %v", k, err)
		}
		full, err := desired(&r, nil, map[string]string{}, -1)
		if err != nil {
			t.Fatal(err)
		}
		for i := range numMaps {
			if len(next.maps[i]) != len(full.maps[i]) {
				t.Fatalf("step %d map %d: %d keys incrementally, %d from scratch", k, i, len(next.maps[i]), len(full.maps[i]))
			}
			for a, ch := range full.maps[i] {
				if next.maps[i][a] != ch {
					t.Fatalf("step %d map %d key %v: %q incrementally, %q from scratch", k, i, a, next.maps[i][a], ch)
				}
			}
		}
		prev = next
	}
	// Two pods with one address: an error, and prev unchanged.
	bad := rs
	bad.Pods = append([]policy.PodRules(nil), rs.Pods...)
	bad.Pods[1].IPs = []netip.Addr{rs.Pods[2].IPs[0]}
	before := len(prev.maps[mapIng4])
	snapshot := map[netip.Addr]string{}
	for a, ch := range prev.maps[mapIng4] {
		snapshot[a] = ch
	}
	if _, err := desired(&bad, prev, map[string]string{}, -1); err == nil {
		t.Fatal("an address of two pods accepted")
	}
	if len(prev.maps[mapIng4]) != before {
		t.Fatalf("failed build changed the previous maps: %d keys, %d before", len(prev.maps[mapIng4]), before)
	}
	for a, ch := range snapshot {
		if prev.maps[mapIng4][a] != ch {
			t.Fatalf("failed build changed key %v", a)
		}
	}
}

func TestLoggedDropPod(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if d := (LoggedDrop{Chain: "ingress-0123456789ab", Src: src, Dst: dst}); !d.Ingress() || d.Pod() != dst {
		t.Errorf("ingress drop: %v %v", d.Ingress(), d.Pod())
	}
	if d := (LoggedDrop{Chain: "egress-0123456789ab", Src: src, Dst: dst}); d.Ingress() || d.Pod() != src {
		t.Errorf("egress drop: %v %v", d.Ingress(), d.Pod())
	}
	if isProfileChain("in-00000000000a") || !isProfileChain("egress-x") {
		t.Error("isProfileChain")
	}
}

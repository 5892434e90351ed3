package policykernel

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/internal/roottest"
)

// scaleNS opens a Writer on a fresh namespace.
func scaleNS(tb testing.TB) (*Writer, int) {
	tb.Helper()
	_, p := roottest.NewNS(tb, "pks")
	h, err := vnetns.GetFromPath(p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	w, err := Open(int(h), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close() })
	return w, int(h)
}

// onePodChange returns rs with pod i's ingress peer ranges rotated and
// one ports box added or not, so successive calls differ from each other.
func onePodChange(rs policy.Ruleset, i, round int) policy.Ruleset {
	out := rs
	out.Pods = slices.Clone(rs.Pods)
	p := out.Pods[i]
	c := *p.Ingress
	if round%2 == 1 {
		c.Any4 = c.Any4[1:]
		peer := netip.AddrFrom4([4]byte{192, 0, 2, byte(round)})
		c.Ports4 = append(slices.Clone(c.Ports4), policy.PortBox{Addrs: policy.AddrRange{From: peer, To: peer}, Proto: policy.UDP, Ports: policy.PortRange{From: 53, To: 53}})
	}
	p.Ingress = &c
	out.Pods[i] = p
	return out
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// TestScale1000 programs 1,000 isolated pods (both directions, both
// families, 2,001 chains, 12 sets, ~50,000 elements) and asserts that
// a one-pod change is a small batch and that a second writer adopts it
// all without a change. Times are logged, not asserted.
func TestScale1000(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: programs 1,000 pods")
	}
	roottest.Require(t)
	const pods, runs = 1000, 3
	rs := bigRuleset(pods)
	var full, change, adopt []time.Duration
	for run := range runs {
		w, fd := scaleNS(t)
		st, err := w.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		full = append(full, st.Duration)
		if run == 0 {
			t.Logf("full apply: %+v", st)
		}
		for round := 1; round <= 6; round++ {
			// A change (odd rounds change the pod), then its undoing:
			// both one-pod batches.
			for _, r := range []policy.Ruleset{onePodChange(rs, (round*137)%pods, 2*round-1), rs} {
				st, err := w.Apply(r)
				if err != nil {
					t.Fatal(err)
				}
				if st.Messages != 2 || st.ChainsAdded+st.ChainsRemoved+st.SetsAdded+st.SetsRemoved != 0 || st.ElementsAdded+st.ElementsRemoved != 2 {
					t.Errorf("one-pod change %d: %+v", round, st)
				}
				change = append(change, st.Duration)
			}
		}
		start := time.Now()
		w2, err := Open(fd, nil)
		if err != nil {
			t.Fatal(err)
		}
		adopt = append(adopt, time.Since(start))
		st, err = w2.Apply(rs)
		w2.Close()
		if err != nil || st.Changed() {
			t.Fatalf("adopting 1,000 pods: %+v, %v", st, err)
		}
		d, err := w.Dropped()
		if err != nil || len(d) != 2*pods {
			t.Fatalf("Dropped: %d chains, %v", len(d), err)
		}
		if _, err := w.Apply(policy.Ruleset{}); err != nil {
			t.Fatalf("removing 1,000 pods: %v", err)
		}
	}
	t.Logf("1,000 pods, %d runs, load average %s: full apply median %v (%v), one-pod change median %v max %v over %d, adoption (Open) median %v (%v)",
		runs, loadavg(), median(full), full, median(change), slices.Max(change), len(change), median(adopt), adopt)
}

// TestScale10000 programs 10,000 isolated pods with five elements each
// (20,001 chains, ~100,000 rules, ~90,000 elements with the map entries),
// changes one, adopts the table and removes it all. Times are logged.
func TestScale10000(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: programs 10,000 pods")
	}
	roottest.Require(t)
	const pods = 10000
	rs := smallRuleset(pods)
	w, fd := scaleNS(t)
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	full := st
	var change []time.Duration
	for round := 1; round <= 4; round++ {
		for _, r := range []policy.Ruleset{onePodChange(rs, (round*1237)%pods, 2*round-1), rs} {
			st, err := w.Apply(r)
			if err != nil {
				t.Fatal(err)
			}
			if st.Messages != 2 || st.ChainsAdded+st.ChainsRemoved+st.SetsAdded+st.SetsRemoved != 0 {
				t.Errorf("one-pod change %d: %+v", round, st)
			}
			change = append(change, st.Duration)
		}
	}
	start := time.Now()
	w2, err := Open(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	adopt := time.Since(start)
	st, err = w2.Apply(rs)
	w2.Close()
	if err != nil || st.Changed() {
		t.Fatalf("adopting 10,000 pods: %+v, %v", st, err)
	}
	st, err = w.Apply(policy.Ruleset{})
	if err != nil {
		t.Fatalf("removing 10,000 pods: %v", err)
	}
	slices.Sort(change)
	t.Logf("10,000 pods, load average %s: full apply %v (%d messages), one-pod changes %v, adoption (Open) %v, removing all %v",
		loadavg(), full.Duration, full.Messages, change, adopt, st.Duration)
}

func BenchmarkApplyOnePodChange1000(b *testing.B) {
	roottest.Require(b)
	rs := bigRuleset(1000)
	w, _ := scaleNS(b)
	if _, err := w.Apply(rs); err != nil {
		b.Fatal(err)
	}
	var d []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for _, r := range []policy.Ruleset{onePodChange(rs, i%1000, 1+2*(i%100)), rs} {
			st, err := w.Apply(r)
			if err != nil {
				b.Fatal(err)
			}
			d = append(d, st.Duration)
		}
	}
	slices.Sort(d)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(len(d)), "µs/apply")
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkApplyFull1000(b *testing.B) {
	roottest.Require(b)
	rs := bigRuleset(1000)
	for b.Loop() {
		b.StopTimer()
		w, _ := scaleNS(b)
		b.StartTimer()
		if _, err := w.Apply(rs); err != nil {
			b.Fatal(err)
		}
	}
}

// A batch whose acks do not fit the socket is in the kernel all the same:
// Apply finds that out by reading the table and reports success.
func TestAcksLost(t *testing.T) {
	roottest.Require(t)
	_, fd := scaleNS(t)
	var logs bytes.Buffer
	w, err := Open(fd, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	orig := bufferSizes
	bufferSizes = func(messages, bytes int) (int, int) { s, _ := orig(messages, bytes); return s, 4096 }
	defer func() { bufferSizes = orig }()
	rs := bigRuleset(100)
	st, err := w.Apply(rs)
	if err != nil || st.ChainsAdded != 201 {
		t.Fatalf("apply with a tiny receive buffer: %+v, %v", st, err)
	}
	if !strings.Contains(logs.String(), "no buffer space") {
		t.Errorf("acks were not lost; log: %s", logs.String())
	}
	bufferSizes = orig
	if st, err := w.Apply(rs); err != nil || st.Changed() {
		t.Errorf("after lost acks: %+v, %v", st, err)
	}
}

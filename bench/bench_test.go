package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

func TestMedian(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{3 * ms}, 3 * ms},
		{[]time.Duration{5 * ms, 1 * ms, 3 * ms}, 3 * ms},
		{[]time.Duration{4 * ms, 1 * ms, 2 * ms, 3 * ms}, 2500 * time.Microsecond},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestChains(t *testing.T) {
	for in, want := range map[string]string{"": "bridge,meta", "all": "bridge,meta", "meta": "meta", "bridge": "bridge", "host-local": "host-local"} {
		got, err := Chains(in)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("Chains(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := Chains("ptp"); err == nil {
		t.Error("Chains(ptp) accepted")
	}
}

func TestChainConfParses(t *testing.T) {
	for _, c := range []struct {
		chain, backend string
		types          []string
	}{
		{ChainHostLocal, backendPodnet, []string{"host-local"}},
		{ChainBridge, backendPodnet, []string{"bridge"}},
		{ChainBridge, backendDefault, []string{"bridge"}},
		{ChainMeta, backendPodnet, []string{"bridge", "portmap", "firewall"}},
		{ChainMeta, backendIPTables, []string{"bridge", "portmap", "firewall"}},
		{ChainMeta, backendNFTables, []string{"bridge", "portmap", "firewall"}},
	} {
		raw := chainConf(c.chain, "x", c.backend, 1, "/tmp/x")
		list, err := libcni.ConfListFromBytes([]byte(raw))
		if err != nil {
			t.Fatalf("%s/%q: %v\n%s", c.chain, c.backend, err, raw)
		}
		var got []string
		for _, p := range list.Plugins {
			got = append(got, p.Network.Type)
		}
		if strings.Join(got, ",") != strings.Join(c.types, ",") {
			t.Errorf("%s/%q: plugins %v, want %v", c.chain, c.backend, got, c.types)
		}
		if c.chain == ChainMeta && !list.Plugins[1].Network.Capabilities["portMappings"] {
			t.Errorf("%s/%q: portmap lacks the portMappings capability", c.chain, c.backend)
		}
		for _, want := range map[string][]string{
			backendIPTables: {`"ipMasqBackend":"iptables"`, `"type":"portmap","capabilities":{"portMappings":true},"backend":"iptables"`, `"type":"firewall","backend":"iptables"`},
			backendNFTables: {`"ipMasqBackend":"nftables"`, `"type":"portmap","capabilities":{"portMappings":true},"backend":"nftables"`, `"type":"firewall","backend":"iptables"`},
		}[c.backend] {
			if c.chain == ChainMeta && !strings.Contains(raw, want) {
				t.Errorf("%s/%q lacks %s:\n%s", c.chain, c.backend, want, raw)
			}
		}
	}
}

func TestRatio(t *testing.T) {
	ms := time.Millisecond
	r := &Report{
		Floor: 2 * ms,
		Impls: []Stats{
			{Name: "podnet", AddDel: 9 * ms},
			{Name: "reference-iptables", AddDel: 104 * ms},
			{Name: "reference-nftables", AddDel: 54 * ms},
		},
	}
	if got, want := r.Ratio(r.Impls[1]), 5.0/100; got != want {
		t.Errorf("Ratio(iptables) = %v, want %v", got, want)
	}
	if got, want := r.MaxRatio(), 5.0/50; got != want {
		t.Errorf("MaxRatio = %v, want %v", got, want)
	}
	p := ParStats{Pods: 50}
	if got := p.PodsPerSec(2 * time.Second); got != 25 {
		t.Errorf("PodsPerSec = %v, want 25", got)
	}
	var b bytes.Buffer
	r.Chain = ChainMeta
	r.Parallel = []ParStats{{Name: "podnet", Pods: 50, Rounds: 1, Add: time.Second, Del: time.Second, Floor: time.Second}}
	r.WriteTable(&b)
	for _, want := range []string{"reference-nftables", "0.100", "parallel", "50.0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestWave(t *testing.T) {
	var running, peak atomic.Int64
	d, err := wave(20, func(int) error {
		if n := running.Add(1); n > peak.Load() {
			peak.Store(n)
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if peak.Load() < 2 || d > 400*time.Millisecond {
		t.Errorf("wave ran %d at once, took %v: not parallel", peak.Load(), d)
	}
}

func TestFindReferenceEnv(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"bridge", "host-local", "loopback", "portmap", "firewall"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(EnvReferenceDir, dir)
	if got, err := FindReference(); err != nil || got != dir {
		t.Errorf("FindReference() = %q, %v; want $%s = %s", got, err, EnvReferenceDir, dir)
	}
}

// benchRun builds podnet and runs chain with b.N timed iterations per
// implementation (and the parallel run).
func benchRun(b *testing.B, chain string) *Report {
	if os.Geteuid() != 0 {
		b.Skip("skipped: needs root to create network namespaces")
	}
	ref := os.Getenv("PODNET_REFERENCE_DIR")
	if ref == "" {
		var err error
		if ref, err = FindReference(); err != nil {
			b.Skipf("skipped: %v", err)
		}
	}
	podnet := filepath.Join(b.TempDir(), "podnet")
	if out, err := exec.Command("go", "build", "-o", podnet, "github.com/podnet/podnet/cmd/podnet").CombinedOutput(); err != nil {
		b.Fatalf("go build podnet: %v\n%s", err, out)
	}
	b.ResetTimer()
	rep, err := Run(context.Background(), Options{Iterations: b.N, ReferenceDir: ref, Podnet: podnet, Chain: chain})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	msf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(msf(rep.Podnet().Add), "podnet-add-ms")
	b.ReportMetric(msf(rep.Podnet().Del), "podnet-del-ms")
	b.ReportMetric(msf(rep.Floor), "floor-ms")
	if len(rep.Parallel) > 0 {
		p := rep.Parallel[0]
		b.ReportMetric(p.PodsPerSec(p.Add), "podnet-par-add-pods/s")
		b.ReportMetric(p.PodsPerSec(p.Del), "podnet-par-del-pods/s")
	}
	return rep
}

// BenchmarkAddDel runs the podnet-vs-reference comparison of the bridge
// chain with b.N timed iterations per implementation and reports the
// medians and the ratio as custom metrics (ns/op is the whole comparison and
// means little). Use e.g. `go test -bench AddDel -benchtime 50x ./bench` as
// root.
func BenchmarkAddDel(b *testing.B) {
	rep := benchRun(b, ChainBridge)
	ref := rep.References()[0]
	b.ReportMetric(rep.Ratio(ref), "ratio")
	b.ReportMetric(float64(ref.Add)/float64(time.Millisecond), "ref-add-ms")
	b.ReportMetric(float64(ref.Del)/float64(time.Millisecond), "ref-del-ms")
	if len(rep.Parallel) > 1 {
		p := rep.Parallel[1]
		b.ReportMetric(p.PodsPerSec(p.Add), "ref-par-add-pods/s")
	}
}

// BenchmarkMeta is BenchmarkAddDel for the meta chain (bridge + host-local
// + portmap + firewall), against the reference with its iptables and with
// its nftables backends: `go test -bench Meta -benchtime 50x ./bench`.
func BenchmarkMeta(b *testing.B) {
	rep := benchRun(b, ChainMeta)
	for i, ref := range rep.References() {
		suffix := strings.TrimPrefix(ref.Name, "reference-") // iptables, nftables
		b.ReportMetric(rep.Ratio(ref), "ratio-"+suffix)
		b.ReportMetric(float64(ref.AddDel)/float64(time.Millisecond), "ref-"+suffix+"-adddel-ms")
		if len(rep.Parallel) > i+1 {
			p := rep.Parallel[i+1]
			b.ReportMetric(p.PodsPerSec(p.Add), "ref-"+suffix+"-par-add-pods/s")
		}
	}
}

// TestFloorDrift: a run whose floor moved more than MaxFloorDrift between
// its first and last quarter calls no ratio met or not met.
func TestFloorDrift(t *testing.T) {
	ms := time.Millisecond
	im := &impl{name: "podnet", adds: []time.Duration{ms, ms, ms, ms}, dels: []time.Duration{ms, ms, ms, ms},
		floors: []time.Duration{10 * ms, 10 * ms, 12 * ms, 13 * ms, 13 * ms, 13 * ms, 14 * ms, 14 * ms}}
	s := im.stats()
	if s.FloorFirst != 10*ms || s.FloorLast != 14*ms {
		t.Fatalf("first/last quarter floors %v %v", s.FloorFirst, s.FloorLast)
	}
	steady := Stats{Name: "reference", AddDel: 100 * ms, FloorFirst: 10 * ms, FloorLast: 10 * ms}
	for _, tc := range []struct {
		podnet Stats
		want   string
	}{
		{Stats{Name: "podnet", AddDel: 9 * ms, FloorFirst: 10 * ms, FloorLast: 11 * ms}, "target <= 0.10: met)"},
		{s, "undecided: the floor moved during the run"},
	} {
		r := &Report{Floor: ms, Impls: []Stats{tc.podnet, steady}, LoadBefore: 0.5, LoadAfter: -1}
		var b bytes.Buffer
		r.WriteTable(&b)
		if !strings.Contains(b.String(), tc.want) || !strings.Contains(b.String(), "load average 0.50 before, unknown after") {
			t.Errorf("want %q in:\n%s", tc.want, b.String())
		}
	}
}

package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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

func TestChainConfParses(t *testing.T) {
	for _, chain := range []string{ChainBridge, ChainHostLocal} {
		for i, name := range []string{"reference", "podnet"} {
			list, err := libcni.ConfListFromBytes([]byte(chainConf(chain, name, i, "/tmp/x")))
			if err != nil {
				t.Fatalf("%s/%s: %v", chain, name, err)
			}
			if len(list.Plugins) != 1 || list.Plugins[0].Network.Type != chain {
				t.Errorf("%s/%s: plugins %+v", chain, name, list.Plugins)
			}
		}
	}
}

func TestRatio(t *testing.T) {
	ms := time.Millisecond
	r := &Report{
		Floor:     2 * ms,
		Reference: Stats{AddDel: 104 * ms},
		Podnet:    Stats{AddDel: 9 * ms},
	}
	if got, want := r.Ratio(), 5.0/100; got != want {
		t.Errorf("Ratio = %v, want %v", got, want)
	}
}

// BenchmarkAddDel runs the podnet-vs-reference comparison with b.N timed
// iterations per implementation and reports the medians and the ratio as
// custom metrics (ns/op is the whole comparison and means little). Use e.g.
// `go test -bench AddDel -benchtime 50x ./bench` as root.
func BenchmarkAddDel(b *testing.B) {
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
	rep, err := Run(context.Background(), Options{Iterations: b.N, ReferenceDir: ref, Podnet: podnet})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	msf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(rep.Ratio(), "ratio")
	b.ReportMetric(msf(rep.Podnet.Add), "podnet-add-ms")
	b.ReportMetric(msf(rep.Podnet.Del), "podnet-del-ms")
	b.ReportMetric(msf(rep.Reference.Add), "ref-add-ms")
	b.ReportMetric(msf(rep.Reference.Del), "ref-del-ms")
	b.ReportMetric(msf(rep.Floor), "floor-ms")
}

package stress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestIPAM1000 runs 1000 host-local ADDs as separate processes, 16 at a
// time, on one range (and on a dual-stack pair of ranges): 1000 distinct
// addresses per family, each recorded for its container; then 1000 DELs,
// also 16 at a time, leave no reservation.
func TestIPAM1000(t *testing.T) {
	if testing.Short() {
		t.Skip("2000 process execs")
	}
	for _, tc := range []struct {
		name   string
		ranges [][]map[string]string
		fams   int
	}{
		{"v4", [][]map[string]string{{{"subnet": "10.90.0.0/22"}}}, 1},
		{"dual", [][]map[string]string{{{"subnet": "10.91.0.0/22"}}, {{"subnet": "fd91::/118"}}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			stdin, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "stress", "type": "bridge",
				"ipam": map[string]any{"type": "host-local", "dataDir": data, "ranges": tc.ranges}})
			const n, workers = 1000, 16
			start := time.Now()
			var mu sync.Mutex
			owner := map[string]string{}
			each := func(command string, f func(i int, out []byte, err error)) {
				next := make(chan int)
				var wg sync.WaitGroup
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range next {
							c := pluginCmd("host-local", command, fmt.Sprintf("st-%04d", i), "eth0", "/var/run/netns/none", stdin)
							err := c.Run()
							f(i, c.Stdout.(*bytes.Buffer).Bytes(), err)
						}
					}()
				}
				for i := 0; i < n; i++ {
					next <- i
				}
				close(next)
				wg.Wait()
			}
			each("ADD", func(i int, out []byte, err error) {
				cid := fmt.Sprintf("st-%04d", i)
				if err != nil {
					t.Errorf("ADD %s: %v %s", cid, err, out)
					return
				}
				addrs, err := resultAddrs(out)
				if err != nil || len(addrs) != tc.fams {
					t.Errorf("ADD %s: %v %s", cid, err, out)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, a := range addrs {
					if prev, dup := owner[a]; dup {
						t.Errorf("DUPLICATE %s: %s and %s", a, prev, cid)
					}
					owner[a] = cid
				}
			})
			t.Logf("%d ADDs (16 processes at a time): %v", n, time.Since(start))
			if len(owner) != n*tc.fams {
				t.Fatalf("%d distinct addresses, want %d", len(owner), n*tc.fams)
			}
			dir := filepath.Join(data, "stress")
			for a, cid := range owner {
				b, err := os.ReadFile(filepath.Join(dir, a))
				if err != nil || string(b) != cid+"\r\neth0" {
					t.Fatalf("reservation %s: %q %v (ADD said %s)", a, b, err, cid)
				}
			}
			start = time.Now()
			each("DEL", func(i int, out []byte, err error) {
				if err != nil {
					t.Errorf("DEL %d: %v %s", i, err, out)
				}
			})
			t.Logf("%d DELs: %v", n, time.Since(start))
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if _, err := netip.ParseAddr(e.Name()); err == nil {
					t.Errorf("after DELs %s is still reserved", e.Name())
				}
				if len(e.Name()) > 5 && e.Name()[:5] == ".tmp-" {
					t.Errorf("temp file %s left", e.Name())
				}
			}
		})
	}
}

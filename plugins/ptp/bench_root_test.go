package ptp

import (
	"fmt"
	"testing"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
)

// BenchmarkAddDel measures one in-process ADD+DEL (host-local IPAM
// in-process, ipMasq): the plugin's own cost,
// without the process start that a runtime adds.
func BenchmarkAddDel(b *testing.B) {
	for _, extra := range []string{"", `"ipMasq":true`} {
		b.Run(extra, func(b *testing.B) {
			e := nxtest.New(b, Plugin)
			c := conf(e, "1.1.0", "bench", "10.50.0.0/16", "fd50::/64", extra)
			pod := e.Pod()
			e.MustAdd(e.Args(c, "warm", e.Pod(), "eth0"))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				a := e.Args(c, fmt.Sprintf("c%d", i), pod, "eth0")
				if _, err := e.Add(a); err != nil {
					b.Fatal(err)
				}
				if err := e.Del(a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

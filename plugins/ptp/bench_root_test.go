package ptp

import (
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
			e.BenchAddDel(b, conf(e, "1.1.0", "bench", "10.50.0.0/16", "fd50::/64", extra))
		})
	}
}

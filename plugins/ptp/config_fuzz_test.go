package ptp

import (
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParse: any stdin gives a spec-coded error naming ptp or a config
// with IPAM and a valid MTU; Plan and PodRoutes over the config's
// prevResult (as an IPAM result of any version) never panic, and a planned
// result stays printable in every version.
func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"cniVersion":"1.1.0","name":"p","type":"ptp","ipMasq":true,"mtu":1400,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.23.0.0/16"}]]}}`,
		`{"cniVersion":"0.4.0","name":"p","type":"ptp","ipMasqBackend":"nftables","ipam":{"type":"static"}}`,
		`{"name":"p","type":"ptp","mtu":-1,"ipam":{"type":"x"}}`,
		`{"name":"p","type":"ptp"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("ptp", fuzzcheck.VersionOf(p), `"ipam":{"type":"host-local"}`, p))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := Parse(stdin)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if c.IPAM.Type == "" || c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 68) {
			t.Fatalf("accepted %+v", c)
		}
		nc := &types.NetConf{}
		if cniplugin.Decode(name, stdin, nc) != nil {
			return
		}
		res, err := cniplugin.PrevResult(name, nc)
		if err != nil || res == nil {
			return
		}
		if err := Plan(res); err != nil {
			return
		}
		_ = PodRoutes(res)
		fuzzcheck.Result(t, res)
	})
}

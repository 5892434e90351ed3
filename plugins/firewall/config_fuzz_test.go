package firewall

import (
	"testing"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParseConfig: any stdin gives a spec-coded error naming firewall or a
// config with a known policy (any backend is accepted); Compile over its prevResult (any
// version) returns an error or elements that render, never a panic.
func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		`"backend":"iptables","iptablesAdminChainName":"CNI-ADMIN","ingressPolicy":"same-bridge"`,
		`"backend":"firewalld","firewalldZone":"trusted","ingressPolicy":"isolated"`,
		`"backend":"nft"`, `"ingressPolicy":"closed"`, `"ingressPolicy":5`, ``,
	}
	for _, s := range seeds {
		f.Add(fuzzcheck.Conf("firewall", "1.1.0", s, fuzzcheck.PrevResults[6]))
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("firewall", fuzzcheck.VersionOf(p), seeds[0], p))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := ParseConfig(stdin)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		switch c.Policy {
		case PolicyOpen, PolicySameBridge, PolicyIsolated:
		default:
			t.Fatalf("policy %q", c.Policy)
		}
		prev, err := cniplugin.PrevResult(name, &c.conf.NetConf)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if prev == nil {
			return
		}
		a, err := Compile(c, "fz/eth0", prev)
		if err != nil {
			return
		}
		_ = RenderElements(a.Elements())
	})
}

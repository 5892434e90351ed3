package bandwidth

import (
	"strings"
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParseConfig: any stdin (top-level limits, runtimeConfig.bandwidth)
// gives a spec-coded error naming bandwidth and the field, or shapes with
// rate and burst both set and tbf parameters; ifb names and aliases built
// from the network name are valid interface names and bounded aliases.
func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		`"ingressRate":1000000,"ingressBurst":100000,"egressRate":2000000,"egressBurst":200000`,
		`"runtimeConfig":{"bandwidth":{"ingressRate":8000,"ingressBurst":80000,"egressRate":1,"egressBurst":1}}`,
		`"ingressRate":1000000`, `"egressBurst":34359738368,"egressRate":1000`, `"unshapedSubnets":["10.0.0.0/8"]`,
		`"ingressRate":-1`, `"ingressRate":1e30,"ingressBurst":1`, `"runtimeConfig":{"bandwidth":null}`,
	}
	for _, s := range seeds {
		f.Add(fuzzcheck.Conf("bandwidth", "1.1.0", s, fuzzcheck.PrevResults[6]), "cid", "eth0")
	}
	f.Add(fuzzcheck.Conf("bandwidth", "0.3.1", seeds[0], fuzzcheck.PrevResults[3]), strings.Repeat("x", 300), "a b")
	f.Fuzz(func(t *testing.T, stdin []byte, cid, ifname string) {
		c, err := parseConfig(stdin, tick)
		if err != nil {
			fuzzcheck.Err(t, name, err)
		} else {
			for _, s := range []*Shape{c.Ingress, c.Egress} {
				if s != nil && (s.RateBits == 0 || s.BurstBits == 0) {
					t.Fatalf("shape %+v", s)
				}
			}
		}
		netName := string(stdin)
		if len(netName) > 300 {
			netName = netName[:300]
		}
		p, a := ifbNames(netName, cid, ifname)
		for _, n := range []string{p, a} {
			if len(n) != ifbNameLen || !strings.HasPrefix(n, ifbPrefix) {
				t.Fatalf("ifb name %q", n)
			}
		}
		al := aliasFor(netName, cid, ifname)
		if len(al) > aliasMax || !aliasNetwork(al, netName) {
			t.Fatalf("alias %q (len %d) for network %q", al, len(al), netName)
		}
	})
}

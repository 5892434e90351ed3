package static

import (
	"encoding/json"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzLoadConfig: any stdin and CNI_ARGS give a spec-coded error naming
// static, or addresses that are distinct, have a gateway of their own
// family, and re-validate when written back as ipam.addresses; ADD's result
// converts to every spec version.
func FuzzLoadConfig(f *testing.F) {
	seeds := []string{
		`{"cniVersion":"1.1.0","name":"n1","type":"static","ipam":{"type":"static","addresses":[{"address":"10.9.0.5/24","gateway":"10.9.0.1"},{"address":"fd09::5/64"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.9.0.53"],"domain":"x","search":["a"],"options":["ndots:2"]}}}`,
		`{"cniVersion":"0.2.0","name":"n","ipam":{"type":"static","addresses":[{"address":"10.9.0.5/24"},{"address":"10.9.0.6/24"}]}}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"static"},"runtimeConfig":{"ips":["10.1.0.5/24"]},"args":{"cni":{"ips":["10.2.0.5/16"]}}}`,
		`{"name":"n","ipam":{"type":"static","addresses":[{"address":"::ffff:10.0.0.1/120","gateway":"10.0.0.2"}],"routes":[{"dst":"10.0.0.0/8","gw":"fd00::1"}]}}`,
		`{"name":"n","ipam":{"type":"static","addresses":[{"address":"10.0.0.1"}],"dns":{"nameservers":["nope"]}}}`,
	}
	for _, s := range seeds {
		for _, a := range fuzzcheck.CNIArgs {
			f.Add([]byte(s), a)
		}
	}
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := LoadConfig(stdin, cniArgs, true)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		var addrs []map[string]string
		seen := map[string]bool{}
		for _, a := range c.Addresses {
			if seen[a.Prefix.Addr().String()] {
				t.Fatalf("duplicate address %s accepted", a.Prefix)
			}
			seen[a.Prefix.Addr().String()] = true
			if a.Gateway.IsValid() && a.Gateway.Is4() != a.Prefix.Addr().Is4() {
				t.Fatalf("gateway %s of another family than %s", a.Gateway, a.Prefix)
			}
			m := map[string]string{"address": a.Prefix.String()}
			if a.Gateway.IsValid() {
				m["gateway"] = a.Gateway.String()
			}
			addrs = append(addrs, m)
		}
		b, _ := json.Marshal(map[string]any{"cniVersion": c.CNIVersion, "name": "n", "ipam": map[string]any{"type": "static", "addresses": addrs}})
		c2, err := LoadConfig(b, "", true)
		if err != nil || len(c2.Addresses) != len(c.Addresses) {
			t.Fatalf("canonical %s does not re-validate: %v", b, err)
		}
		r, err := Plugin.Add(args(stdin, cniArgs))
		if err != nil {
			t.Fatalf("LoadConfig accepted but ADD failed: %v", err)
		}
		fuzzcheck.Result(t, r.(*current.Result))
	})
}

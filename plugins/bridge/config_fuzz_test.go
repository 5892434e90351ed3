package bridge

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParse: any stdin and CNI_ARGS give a spec-coded error naming bridge,
// or a config with a valid bridge name, MTU and unicast MAC that
// re-validates when marshalled back; Plan over the config's prevResult (as
// an IPAM result of any version) never panics and keeps results printable.
func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"cniVersion":"1.1.0","name":"podnet","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.22.0.0/16"}]]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"bridge","bridge":"br7","isGateway":false,"isDefaultGateway":true,"forceAddress":true,"ipMasq":true,"ipMasqBackend":"iptables","mtu":1400,"hairpinMode":true,"promiscMode":false,"vlan":0,"preserveDefaultVlan":true,"macspoofchk":true,"enabledad":true,"portIsolation":true,"args":{"cni":{"mac":"02:00:00:00:00:01"}},"runtimeConfig":{"mac":"02:00:00:00:00:02"},"ipam":{"type":"host-local"}}`,
		`{"cniVersion":"0.3.1","name":"n","type":"bridge","vlan":100,"vlanTrunk":[{"minID":1,"maxID":10}]}`,
		`{"name":"n","type":"bridge","bridge":"this-name-is-way-too-long","mtu":70000}`,
		`{"name":"n","type":"bridge","bridge":"a/b","disableContainerInterface":true,"ipam":{"type":"static"}}`,
	}
	for _, s := range seeds {
		for _, a := range fuzzcheck.CNIArgs {
			f.Add([]byte(s), a)
		}
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("bridge", fuzzcheck.VersionOf(p), `"isDefaultGateway":true`, p), "")
	}
	f.Fuzz(func(t *testing.T, stdin []byte, env string) {
		c, err := Parse(stdin, env)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if err := ValidIfName(c.BrName); err != nil {
			t.Fatalf("bridge name %q accepted: %v", c.BrName, err)
		}
		if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
			t.Fatalf("mtu %d accepted", c.MTU)
		}
		if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0) {
			t.Fatalf("MAC %s accepted", c.MAC)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := Parse(b, "")
		if err != nil {
			t.Fatalf("parsed config %s does not re-validate: %v", b, err)
		}
		if c2.BrName != c.BrName || c2.MTU != c.MTU || c2.IsGW != c.IsGW {
			t.Fatalf("re-parse changed the config: %+v vs %+v", c, c2)
		}
		nc := &types.NetConf{}
		if cniplugin.Decode(name, stdin, nc) != nil {
			return
		}
		res, err := cniplugin.PrevResult(name, nc)
		if err != nil || res == nil {
			return
		}
		if _, err := Plan(c, res); err == nil {
			fuzzcheck.Result(t, res)
		}
	})
}

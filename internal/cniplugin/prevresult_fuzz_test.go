package cniplugin_test

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzPrevResult feeds a chained plugin's config (a prevResult of any spec
// version, or garbage) through Decode, ConfVersion and PrevResult: no
// panic, errors are spec-coded CNI errors, and a parsed result converts to
// every version and survives a JSON round trip through PrevResult again.
func FuzzPrevResult(f *testing.F) {
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("portmap", fuzzcheck.VersionOf(p), "", p))
		f.Add(fuzzcheck.Conf("portmap", "1.1.0", "", p)) // version mismatch
	}
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"x","prevResult":null}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"x","prevResult":"str"}`))
	f.Add([]byte(`{"cniVersion":"9.9.9","name":"n","type":"x","prevResult":{"cniVersion":"9.9.9"}}`))
	f.Add([]byte(`{"prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"nonsense"}}}`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		if _, err := cniplugin.ConfVersion(stdin); err != nil {
			fuzzcheck.Err(t, "", err)
		}
		conf := &types.NetConf{}
		if err := cniplugin.Decode("fz", stdin, conf); err != nil {
			fuzzcheck.Err(t, "fz", err)
			return
		}
		res, err := cniplugin.PrevResult("fz", conf)
		if err != nil {
			fuzzcheck.Err(t, "fz", err)
			return
		}
		if _, err := cniplugin.RequirePrevResult("fz", conf); (err != nil) != (res == nil) {
			t.Fatalf("RequirePrevResult disagrees with PrevResult: %v, %v", err, res)
		}
		if res == nil {
			return
		}
		fuzzcheck.Result(t, res)
		// Valid output re-validates: the converted result, sent as the
		// prevResult of a 1.1.0 config, parses to the same thing.
		rb, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		again := &types.NetConf{}
		if err := cniplugin.Decode("fz", fuzzcheck.Conf("x", "1.1.0", "", string(rb)), again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		res2, err := cniplugin.PrevResult("fz", again)
		if err != nil || res2 == nil {
			t.Fatalf("re-parse of %s: %v", rb, err)
		}
		rb2, _ := json.Marshal(res2)
		if string(rb) != string(rb2) {
			t.Fatalf("prevResult changed on re-parse:\n%s\n%s", rb, rb2)
		}
	})
}

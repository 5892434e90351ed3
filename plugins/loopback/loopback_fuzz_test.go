package loopback

import (
	"testing"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParse: loopback's config and prevResult (passed through when
// chained) of any version decode to a spec-coded error or a result that
// converts to every version.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"lo","type":"loopback"}`))
	f.Add([]byte(`{"cniVersion":"0.2.0","name":"lo","type":"loopback"}`))
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("loopback", fuzzcheck.VersionOf(p), "", p))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := parse(&skel.CmdArgs{StdinData: stdin})
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		prev, err := cniplugin.PrevResult(name, conf)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		fuzzcheck.Result(t, prev)
	})
}

package sbr

import (
	"testing"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParseConfig: any stdin gives a spec-coded error naming sbr (never
// for DEL, which must accept what ADD refused unless the JSON is broken),
// or a table outside the kernel's reserved ones; podIPs over the
// prevResult of any version never panics.
func FuzzParseConfig(f *testing.F) {
	seeds := []string{`"table":100`, `"table":254`, `"table":0`, `"table":4294967296`, `"vrfname":"blue"`, `"table":"x"`, ``}
	for _, s := range seeds {
		f.Add(fuzzcheck.Conf("sbr", "1.1.0", s, fuzzcheck.PrevResults[6]), false)
		f.Add(fuzzcheck.Conf("sbr", "1.1.0", s, ""), true)
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("sbr", fuzzcheck.VersionOf(p), "", p), false)
	}
	f.Fuzz(func(t *testing.T, stdin []byte, forDel bool) {
		c, err := ParseConfig(stdin, forDel)
		if err != nil {
			te := fuzzcheck.Err(t, name, err)
			if forDel && te.Code != 6 {
				if _, err2 := ParseConfig(stdin, false); err2 == nil {
					t.Fatalf("DEL refuses what ADD accepts: %v", te)
				}
			}
			return
		}
		if c.Table != 0 && (c.Table < 1 || (c.Table >= 252 && c.Table <= 255)) {
			t.Fatalf("table %d accepted", c.Table)
		}
		prev, err := cniplugin.PrevResult(name, &c.prev.NetConf)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if prev != nil {
			_ = podIPs(prev, "eth0")
		}
	})
}

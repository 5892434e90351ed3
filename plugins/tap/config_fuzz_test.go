package tap

import (
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParse: any stdin and CNI_ARGS give a spec-coded error naming tap or
// a config with an MTU of 0 or 68-65535, owner and group not (uid_t)-1,
// no selinuxContext and, when set, a 6-byte unicast MAC.
func FuzzParse(f *testing.F) {
	for _, s := range []struct{ stdin, env string }{
		{`{"cniVersion":"1.1.0","name":"t","type":"tap","multiQueue":true,"mtu":1400,"owner":1000,"group":1000,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.23.0.0/16"}]]}}`, ""},
		{`{"cniVersion":"1.0.0","name":"t","type":"tap","mac":"0a:00:00:00:00:01","selinuxContext":"x"}`, "MAC=0a:00:00:00:00:02"},
		{`{"name":"t","type":"tap","owner":4294967295,"runtimeConfig":{"mac":"01:00:00:00:00:01"}}`, "IgnoreUnknown=1;MAC=x"},
	} {
		f.Add([]byte(s.stdin), s.env)
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("tap", fuzzcheck.VersionOf(p), `"ipam":{"type":"host-local"}`, p), "")
	}
	f.Fuzz(func(t *testing.T, stdin []byte, env string) {
		c, err := Parse(stdin, env)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 68) || c.SelinuxContext != "" {
			t.Fatalf("accepted %+v", c)
		}
		for _, id := range []*uint32{c.Owner, c.Group} {
			if id != nil && *id == ^uint32(0) {
				t.Fatalf("accepted ID -1: %+v", c)
			}
		}
		if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0) {
			t.Fatalf("accepted MAC %s", c.MAC)
		}
	})
}

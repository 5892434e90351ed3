package macvlan

import (
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParse: any stdin and CNI_ARGS give a spec-coded error naming macvlan
// or a config whose mode is one netlink knows, whose MTU is 0 or 68-65535
// and whose MAC, when set, is a 6-byte unicast address.
func FuzzParse(f *testing.F) {
	for _, s := range []struct{ stdin, env string }{
		{`{"cniVersion":"1.1.0","name":"m","type":"macvlan","master":"eth1","mode":"private","mtu":1400,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.23.0.0/16"}]]}}`, ""},
		{`{"cniVersion":"1.0.0","name":"m","type":"macvlan","linkInContainer":true,"mac":"0a:00:00:00:00:01","ipam":{}}`, "MAC=0a:00:00:00:00:02"},
		{`{"name":"m","type":"macvlan","runtimeConfig":{"mac":"01:00:00:00:00:01"},"mode":"source"}`, "IgnoreUnknown=1;MAC=x"},
	} {
		f.Add([]byte(s.stdin), s.env)
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("macvlan", fuzzcheck.VersionOf(p), `"master":"eth0","ipam":{"type":"host-local"}`, p), "")
	}
	f.Fuzz(func(t *testing.T, stdin []byte, env string) {
		c, err := Parse(stdin, env)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if ModeName(c.LinkMode) == "unknown" || c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 68) {
			t.Fatalf("accepted %+v", c)
		}
		if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0) {
			t.Fatalf("accepted MAC %s", c.MAC)
		}
	})
}

package portmap

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParseConfig: any stdin (runtimeConfig.portMappings in either key
// spelling, any prevResult version) gives a spec-coded error naming portmap
// — naming the mapping entry when one is bad — or mappings with ports in
// 1-65535, a known protocol and no duplicate host port, that re-validate
// when written back; Desired and Render over them never panic.
func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080},{"HostPort":53,"ContainerPort":5353,"Protocol":"UDP","HostIP":"192.0.2.1"},{"hostport":9,"CONTAINERPORT":9,"protocol":"sctp","hostIP":"::"}]}`,
		`"snat":false,"masqAll":true,"markMasqBit":31,"dataDir":"/run/x","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostPort":81}]}`,
		`"runtimeConfig":{"portMappings":[{"hostPort":80,"HostPort":80,"containerPort":1}]}`,
		`"runtimeConfig":{"portMappings":[{"hostPort":"80","containerPort":1}]}`,
		`"runtimeConfig":{"portMappings":[1,null,[]]}`,
		`"backend":"iptables"`, `"externalSetMarkChain":"X"`, `"conditionsV4":["-s","1.2.3.4"]`, `"markMasqBit":32`,
		`"runtimeConfig":{"portMappings":[{"hostPort":65536,"containerPort":0,"protocol":"icmp","hostIP":"nope"}]}`,
	}
	for _, s := range seeds {
		f.Add(fuzzcheck.Conf("portmap", "1.1.0", s, fuzzcheck.PrevResults[6]))
		f.Add(fuzzcheck.Conf("portmap", "1.1.0", s, ""))
	}
	for _, p := range fuzzcheck.PrevResults {
		f.Add(fuzzcheck.Conf("portmap", fuzzcheck.VersionOf(p), seeds[0], p))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := ParseConfig(stdin)
		if err != nil {
			te := fuzzcheck.Err(t, name, err)
			if strings.Contains(string(stdin), "portMappings") && te.Code == 7 && strings.Contains(te.Msg, "portMappings") && !strings.Contains(te.Msg, "runtimeConfig.portMappings[") {
				t.Fatalf("mapping error does not name the entry: %s", te.Msg)
			}
			return
		}
		if c.MarkBit > 31 || c.DataDir == "" {
			t.Fatalf("accepted %+v", c)
		}
		var pms []map[string]any
		for _, m := range c.Mappings {
			if m.HostPort == 0 || m.ContainerPort == 0 || protoName(m.Proto) == "" || strings.HasPrefix(protoName(m.Proto), "proto") {
				t.Fatalf("accepted mapping %v", m)
			}
			pm := map[string]any{"hostPort": m.HostPort, "containerPort": m.ContainerPort, "protocol": protoName(m.Proto)}
			if m.HostIP != nil {
				pm["hostIP"] = m.HostIP.String()
			}
			pms = append(pms, pm)
		}
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "n", "type": "portmap", "runtimeConfig": map[string]any{"portMappings": pms}})
		c2, err := ParseConfig(b)
		if err != nil || len(c2.Mappings) != len(c.Mappings) {
			t.Fatalf("canonical %s does not re-validate: %v", b, err)
		}
		for i := range c.Mappings {
			if c.Mappings[i].String() != c2.Mappings[i].String() {
				t.Fatalf("mapping %d changed: %s -> %s", i, c.Mappings[i], c2.Mappings[i])
			}
		}
		v4, v6 := PodAddrs(c.Prev, "eth0")
		_ = Render(Desired(c, v4, v6, "fz/eth0"))
		fuzzcheck.Result(t, c.Prev)
	})
}

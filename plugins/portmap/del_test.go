package portmap

import "testing"

// TestDelDecodes: every config ParseConfig (ADD, CHECK) refuses with a
// value error, DEL's and GC's parseLenient accepts (docs/del.md): they
// remove the attachment's elements by tag and need only the network name
// and the dataDir of the lock.
func TestDelDecodes(t *testing.T) {
	for _, extra := range []string{
		`"runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}`,
		`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}`,
		`"runtimeConfig":{"portMappings":[7]}`,
		`"markMasqBit":32`,
		`"conditionsV4":["-s","1.2.3.4"]`,
		`"externalSetMarkChain":"KUBE-MARK-MASQ"`,
		`"backend":"iptables"`,
		`"backend":"ebpf"`,
		`"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}`,
	} {
		if _, err := ParseConfig(conf(extra)); err == nil {
			t.Errorf("ParseConfig accepted %s", extra)
		}
		if c, _, err := parseLenient(conf(extra)); err != nil || c.Name != "net1" {
			t.Errorf("parseLenient(%s): %v", extra, err)
		}
	}
	if _, _, err := parseLenient(conf(`"dataDir":"rel"`)); err == nil {
		t.Error("parseLenient accepted a relative dataDir (DEL needs it for the lock)")
	}
}

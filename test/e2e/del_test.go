package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestCNIToolDelAfterRefusedAdd is issue 18's repro, driven by cnitool:
// for a config the bridge plugin refuses while parsing, `cnitool add`
// fails and `cnitool del` (the runtime's cleanup) succeeds; and an
// attachment added with a good config is removed by `cnitool del` with the
// refused one (docs/del.md). With PODNET_E2E_PLUGINS pointing at the
// reference plugins v1.9.1 the test passes too.
func TestCNIToolDelAfterRefusedAdd(t *testing.T) {
	n := newNode(t)
	conflist := func(fields string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"bridge","bridge":"dtbr0",%s
			"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]}}]}`, n.net, fields, n.dataDir, subnet)
	}
	for _, tc := range []struct{ name, fields, field string }{
		{"mtu 70000", `"mtu":70000,`, "mtu"},
		{"hairpinMode and promiscMode", `"hairpinMode":true,"promiscMode":true,`, "airpin"},
		{"bridge name over 15 bytes", `"bridge":"dtbr0123456789abc",`, "bridge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.t = t
			pod := newPod(t, false)
			n.writeConf(n.net, conflist(tc.fields))
			if _, err := n.cnitool("add", n.net, pod); err == nil {
				t.Fatal("cnitool add succeeded")
			} else if n.tools.podnetPlugins && !strings.Contains(err.Error(), tc.field) {
				t.Errorf("cnitool add: %v, want the error to name %s", err, tc.field)
			}
			if _, err := n.cnitool("del", n.net, pod); err != nil {
				t.Fatalf("cnitool del after the refused add: %v", err)
			}

			n.writeConf(n.net, conflist(""))
			ip := parseResult(t, n.must(n.cnitool("add", n.net, pod)))
			n.assertAttached(pod, ip)
			n.writeConf(n.net, conflist(tc.fields))
			if _, err := n.cnitool("del", n.net, pod); err != nil {
				t.Fatalf("cnitool del with the refused config: %v", err)
			}
			n.assertDetached(pod, ip.Addr())
		})
	}
}

package podnet

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/ipam/hostlocal"
)

// TestDelDecodes: a config ADD refuses (ipam set, a bad mtu) still
// releases the attachment's reservation on DEL (docs/del.md); what DEL
// needs to find it (name, stateDir, dataDir) is still checked.
func TestDelDecodes(t *testing.T) {
	for _, tc := range []struct{ name, fields, field string }{
		{"ipam set", `"ipam":{"type":"host-local"}`, `"ipam"`},
		{"mtu too big", `"mtu":70000`, `"mtu"`},
		{"mtu too small", `"mtu":100`, `"mtu"`},
		{"negative mtu", `"mtu":-1`, `"mtu"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := nodestate.Write(dir, nodestate.State{Node: "n1", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")},
				Gateways: []netip.Addr{netip.MustParseAddr("10.244.3.1")}, MTU: 1450}); err != nil {
				t.Fatal(err)
			}
			// The reservation ADD would have made, through podnet's own host-local.
			hl := []byte(`{"cniVersion":"1.1.0","name":"pn","type":"ptp","ipam":{"type":"host-local","dataDir":"` + filepath.Join(dir, "ipam") + `","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]]}}`)
			if _, err := hostlocal.Plugin.Add(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x", StdinData: hl}); err != nil {
				t.Fatal(err)
			}
			stdin := []byte(`{"cniVersion":"1.1.0","name":"pn","type":"podnet","stateDir":"` + dir + `",` + tc.fields + `}`)
			_, err := Parse(stdin)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != 7 || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("Parse: %v, want code 7 naming %s", err, tc.field)
			}
			if err := Plugin.Del(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: stdin}); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			ents, err := os.ReadDir(filepath.Join(dir, "ipam", "pn"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "10.") {
					t.Fatalf("reservation %s left", e.Name())
				}
			}
		})
	}
	for _, tc := range []struct{ fields, field string }{
		{`"name":""`, `"name"`},
		{`"stateDir":"rel"`, `"stateDir"`},
		{`"dataDir":"rel"`, `"dataDir"`},
	} {
		stdin := []byte(`{"cniVersion":"1.1.0","name":"pn","type":"podnet",` + tc.fields + `}`)
		err := Plugin.Del(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: stdin})
		var te *types.Error
		if !errors.As(err, &te) || te.Code != 7 || !strings.Contains(te.Msg, tc.field) {
			t.Errorf("DEL %s: %v, want code 7 naming %s", tc.fields, err, tc.field)
		}
	}
}

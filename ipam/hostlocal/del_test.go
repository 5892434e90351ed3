package hostlocal

import (
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/cnierr"
)

// TestDelDecides is the DEL rule of docs/del.md for host-local: every
// config below is refused by ADD, and DEL still releases the attachment's
// reservation, because DEL needs only the network name and dataDir. A bad
// name or dataDir stops DEL too: it could not know where to look.
func TestDelDecides(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ipam  map[string]any
		top   map[string]any
		env   string
		field string // what ADD names
	}{
		{"invalid CIDR", v4Ranges("10.0.0.0/33"), nil, "", "subnet"},
		{"missing ranges", map[string]any{}, nil, "", "ranges"},
		{"empty range set", map[string]any{"ranges": [][]map[string]string{{}}}, nil, "", "ranges"},
		{"overlapping ranges", map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "10.0.0.0/25"}}}}, nil, "", "overlap"},
		{"rangeStart outside", map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24", "rangeStart": "10.1.0.1"}}}}, nil, "", "rangeStart"},
		{"gateway of the other family", map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}}}}, nil, "", "gateway"},
		{"bad route", map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}}, "routes": []map[string]any{{"dst": "nope"}}}, nil, "", "routes"},
		{"requested IP outside", v4Ranges("10.0.0.0/24"), map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"10.9.9.9"}}}}, "", "10.9.9.9"},
		{"bad CNI_ARGS IP", v4Ranges("10.0.0.0/24"), nil, "IP=bogus", "IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			good := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
			addOK(t, cmdArgs("c1", "eth0", good))
			bad := netconf(t, dir, tc.ipam, tc.top)
			a := cmdArgs("c1", "eth0", bad)
			a.Args = tc.env
			if _, err := Plugin.Add(a); err == nil {
				t.Fatalf("ADD accepted %s", bad)
			} else if te := err.Error(); !strings.Contains(te, tc.field) {
				t.Fatalf("ADD error %q does not name %q", te, tc.field)
			}
			if err := Plugin.Del(a); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if res, _ := dirState(t, dir); len(res) != 0 {
				t.Fatalf("reservations left: %v", res)
			}
		})
	}
	// What DEL needs is still checked.
	rel := netconf(t, "relative/dir", v4Ranges("10.0.0.0/24"), nil)
	wantErr(t, Plugin.Del(cmdArgs("c1", "eth0", rel)), cnierr.InvalidConfig, `"dataDir"`)
	esc := netconf(t, t.TempDir(), v4Ranges("10.0.0.0/24"), map[string]any{"name": "../x"})
	wantErr(t, Plugin.Del(cmdArgs("c1", "eth0", esc)), cnierr.InvalidConfig, `"name"`)
}

// TestGatewayOutsideSubnet: accepted as in the reference v1.9.1 and
// returned as the address's gateway.
func TestGatewayOutsideSubnet(t *testing.T) {
	dir := t.TempDir()
	stdin := netconf(t, dir, map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24", "gateway": "169.254.1.1"}}}}, nil)
	r := addOK(t, cmdArgs("c1", "eth0", stdin))
	if len(r.IPs) != 1 || r.IPs[0].Gateway.String() != "169.254.1.1" || r.IPs[0].Address.String() != "10.0.0.1/24" {
		t.Fatalf("%+v", r.IPs)
	}
}

package nodestate_test

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"testing"

	"github.com/podnet/podnet/agent/nodestate"
)

func TestWriteRead(t *testing.T) {
	dir := t.TempDir() + "/sub"
	if _, err := nodestate.Read(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want not-exist, got %v", err)
	}
	s := nodestate.State{
		Node: "n1", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")},
		Gateways: []netip.Addr{nodestate.GatewayFor(netip.MustParsePrefix("10.244.3.0/24"))},
		MTU:      1450, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Backend: "vxlan",
	}
	if s.Gateways[0].String() != "10.244.3.1" {
		t.Fatalf("gateway %s", s.Gateways[0])
	}
	for range 2 { // overwrite works too
		if err := nodestate.Write(dir, s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := nodestate.Read(dir)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("got %+v %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	fi, _ := os.Stat(nodestate.Path(dir))
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

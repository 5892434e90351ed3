package podnet

import (
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/ipam/hostlocal"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != nodestate.DefaultDir || c.DataDir != hostlocal.DefaultDataDir {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = Parse([]byte(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet","stateDir":"/run/x/n1/"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/run/x/n1" || c.DataDir != "/run/x/n1/ipam" {
		t.Fatalf("lab dirs: %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code uint
		want string
	}{
		{`{"name":"p","stateDir":"rel"}`, cnierr.InvalidConfig, `"stateDir"`},
		{`{"name":"p","dataDir":"rel"}`, cnierr.InvalidConfig, `"dataDir"`},
		{`{"name":"p","mtu":70000}`, cnierr.InvalidConfig, `"mtu"`},
		{`{"name":"p","mtu":"x"}`, cnierr.DecodingFailure, `"mtu"`},
		{`{"name":"p","ipam":{"type":"host-local"}}`, cnierr.InvalidConfig, `"ipam"`},
		{`{"cniVersion":"1.1.0"}`, cnierr.InvalidConfig, `"name"`},
	} {
		_, err := Parse([]byte(tc.in))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) {
			t.Errorf("%s: got %v, want code %d naming %s", tc.in, err, tc.code, tc.want)
		}
	}
}

func TestPtpConf(t *testing.T) {
	stdin := []byte(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet","stateDir":"/s",
		"runtimeConfig":{"ips":["10.244.3.9"]},"prevResult":{"cniVersion":"1.1.0"},"cni.dev/valid-attachments":[]}`)
	c, err := Parse(stdin)
	if err != nil {
		t.Fatal(err)
	}
	st := &nodestate.State{
		Node:     "n1",
		Subnets:  []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:244:0:3::/64")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.244.3.1"), netip.MustParseAddr("fd00:244:0:3::1")},
		MTU:      1450,
	}
	b, err := PtpConf(stdin, c, st)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := `{"cni.dev/valid-attachments":[],"cniVersion":"1.1.0","ipMasq":false,"ipam":{"dataDir":"/s/ipam","ranges":[[{"gateway":"10.244.3.1","subnet":"10.244.3.0/24"}],[{"gateway":"fd00:244:0:3::1","subnet":"fd00:244:0:3::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}],"type":"host-local"},"mtu":1450,"name":"podnet","prevResult":{"cniVersion":"1.1.0"},"runtimeConfig":{"ips":["10.244.3.9"]},"type":"ptp"}`
	if g, _ := json.Marshal(got); string(g) != want {
		t.Fatalf("ptp conf\n got %s\nwant %s", g, want)
	}
	// An explicit mtu wins; without node state only the store is named.
	c.MTU = 1300
	b, _ = PtpConf(stdin, c, st)
	if !strings.Contains(string(b), `"mtu":1300`) {
		t.Fatalf("mtu override: %s", b)
	}
	b, _ = PtpConf(stdin, c, nil)
	if strings.Contains(string(b), "ranges") || strings.Contains(string(b), `"mtu"`) || !strings.Contains(string(b), `"dataDir":"/s/ipam"`) {
		t.Fatalf("store-only conf: %s", b)
	}
}

// Without node.json, ADD and CHECK fail at once with code 11 naming the
// file, STATUS with code 50; DEL and GC succeed (nothing to release).
func TestNoNodeState(t *testing.T) {
	dir := t.TempDir()
	stdin := []byte(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet","stateDir":"` + dir + `"}`)
	args := &skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/none", IfName: "eth0", StdinData: stdin}
	_, err := Plugin.Add(args)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != cnierr.TryAgainLater || !strings.Contains(te.Msg, filepath.Join(dir, "node.json")) || !strings.Contains(te.Msg, "agent") {
		t.Fatalf("ADD without node.json: %v", err)
	}
	err = Plugin.Check(args)
	if !errors.As(err, &te) || te.Code != cnierr.TryAgainLater {
		t.Fatalf("CHECK without node.json: %v", err)
	}
	err = Plugin.Status(args)
	if !errors.As(err, &te) || te.Code != cnierr.NotAvailable {
		t.Fatalf("STATUS without node.json: %v", err)
	}
	if err := Plugin.Del(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: stdin}); err != nil {
		t.Fatalf("DEL without node.json: %v", err)
	}
	gcIn := []byte(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet","stateDir":"` + dir + `","cni.dev/valid-attachments":[]}`)
	if err := Plugin.GC(&skel.CmdArgs{StdinData: gcIn}); err != nil {
		t.Fatalf("GC without node.json: %v", err)
	}

	// Once the agent wrote it, STATUS is fine.
	if err := nodestate.Write(dir, nodestate.State{Node: "n1", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.244.3.1")}, MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	if err := Plugin.Status(args); err != nil {
		t.Fatalf("STATUS with node.json: %v", err)
	}
}

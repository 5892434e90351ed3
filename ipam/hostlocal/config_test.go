package hostlocal

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/podnet/podnet/internal/cnierr"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestConfigDefaultsLegacy(t *testing.T) {
	c, err := LoadConfig(netconf(t, "", map[string]any{"subnet": "10.1.2.0/24"}, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != DefaultDataDir || c.NetDir() != filepath.Join(DefaultDataDir, testNet) {
		t.Fatalf("dataDir %q", c.DataDir)
	}
	if len(c.Ranges) != 1 || len(c.Ranges[0]) != 1 {
		t.Fatalf("ranges %+v", c.Ranges)
	}
	r := c.Ranges[0][0]
	if r.Gateway != mustAddr("10.1.2.1") || r.Start != mustAddr("10.1.2.1") || r.End != mustAddr("10.1.2.254") {
		t.Fatalf("defaults: %+v", r)
	}
	c, err = LoadConfig(netconf(t, "/x", map[string]any{"ranges": [][]map[string]string{{{"subnet": "fd00::/120"}}}}, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	r = c.Ranges[0][0]
	if r.Gateway != mustAddr("fd00::1") || r.Start != mustAddr("fd00::1") || r.End != mustAddr("fd00::ff") {
		t.Fatalf("v6 defaults: %+v", r)
	}
}

func TestConfigAllFields(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("# c\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.com\nsearch a.example b.example\noptions ndots:2 edns0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ipam := map[string]any{
		"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10", "rangeEnd": "10.9.0.20", "gateway": "10.9.0.254",
		"ranges": [][]map[string]string{
			{{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.0", "rangeEnd": "10.10.1.255", "gateway": "10.10.0.1"}, {"subnet": "10.11.0.0/24"}},
			{{"subnet": "fd00:10::/64", "rangeStart": "fd00:10::100", "rangeEnd": "fd00:10::1ff"}},
		},
		"routes":     []map[string]any{{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254", "mtu": 1400}, {"dst": "::/0", "gw": "fd00:10::1"}},
		"resolvConf": rc,
	}
	c, err := LoadConfig(netconf(t, dir, ipam, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != dir || c.ResolvConf != rc {
		t.Fatal(c.DataDir, c.ResolvConf)
	}
	if len(c.Ranges) != 3 {
		t.Fatalf("want legacy + 2 sets, got %d", len(c.Ranges))
	}
	want := Range{Subnet: netip.MustParsePrefix("10.9.0.0/24"), Start: mustAddr("10.9.0.10"), End: mustAddr("10.9.0.20"), Gateway: mustAddr("10.9.0.254")}
	if !reflect.DeepEqual(c.Ranges[0][0], want) {
		t.Fatalf("legacy range %+v", c.Ranges[0][0])
	}
	if r := c.Ranges[1][1]; r.Start != mustAddr("10.11.0.1") || r.End != mustAddr("10.11.0.254") || r.Field != "ranges[0][1]" {
		t.Fatalf("%+v", r)
	}
	if r := c.Ranges[2][0]; r.Gateway != mustAddr("fd00:10::1") || r.End != mustAddr("fd00:10::1ff") {
		t.Fatalf("%+v", r)
	}
	if len(c.Routes) != 3 || c.Routes[1].MTU != 1400 || c.Routes[1].GW.String() != "10.10.0.254" || c.Routes[2].Dst.String() != "::/0" {
		t.Fatalf("routes %+v", c.Routes)
	}

	// The result carries routes and the resolv.conf DNS.
	res := addOK(t, cmdArgs("c1", "eth0", netconf(t, dir, ipam, nil)))
	if got := resultAddrs(res); !reflect.DeepEqual(got, []string{"10.9.0.10/24", "10.10.1.0/16", "fd00:10::100/64"}) {
		t.Fatalf("addrs %v", got)
	}
	if res.IPs[0].Gateway.String() != "10.9.0.254" || len(res.Routes) != 3 {
		t.Fatalf("result %+v", res)
	}
	d := res.DNS
	if !reflect.DeepEqual(d.Nameservers, []string{"10.0.0.53", "fd00::53"}) || d.Domain != "example.com" ||
		!reflect.DeepEqual(d.Search, []string{"a.example", "b.example"}) || !reflect.DeepEqual(d.Options, []string{"ndots:2", "edns0"}) {
		t.Fatalf("dns %+v", d)
	}
}

func TestConfigErrors(t *testing.T) {
	rs := func(m ...map[string]string) map[string]any { return map[string]any{"ranges": [][]map[string]string{m}} }
	cases := []struct {
		name   string
		ipam   map[string]any
		top    map[string]any
		args   string
		code   uint
		substr []string
	}{
		{"no ranges", map[string]any{}, nil, "", cnierr.InvalidConfig, []string{`field "ranges"`}},
		{"bad subnet", rs(map[string]string{"subnet": "10.0.0.0"}), nil, "", cnierr.InvalidConfig, []string{`host-local: field "ranges[0][0].subnet"`, "CIDR"}},
		{"missing subnet", rs(map[string]string{"rangeStart": "10.0.0.1"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].subnet"`, "missing"}},
		{"host bits", rs(map[string]string{"subnet": "10.0.0.5/24"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].subnet"`, "host bits", "10.0.0.0/24"}},
		{"too small", rs(map[string]string{"subnet": "10.0.0.0/31"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].subnet"`, "too small"}},
		{"start outside", rs(map[string]string{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].rangeStart"`, "not in subnet"}},
		{"end outside", rs(map[string]string{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].rangeEnd"`}},
		{"end broadcast", rs(map[string]string{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.255"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].rangeEnd"`, "broadcast"}},
		{"start network", rs(map[string]string{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].rangeStart"`, "network address"}},
		{"start after end", rs(map[string]string{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.40"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].rangeEnd"`, "before rangeStart"}},
		{"gateway of the other family", rs(map[string]string{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].gateway"`, "family"}},
		{"gateway is the broadcast", rs(map[string]string{"subnet": "10.0.0.0/24", "gateway": "10.0.0.255"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].gateway"`, "broadcast"}},
		{"gateway garbage", rs(map[string]string{"subnet": "10.0.0.0/24", "gateway": "nope"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0].gateway"`, "not an IP"}},
		{"mixed family", rs(map[string]string{"subnet": "10.0.0.0/24"}, map[string]string{"subnet": "fd00::/64"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][1].subnet"`, "family"}},
		{"overlap in set", rs(map[string]string{"subnet": "10.0.0.0/24"}, map[string]string{"subnet": "10.0.0.0/25"}), nil, "", cnierr.InvalidConfig, []string{`"ranges[0][1]"`, "overlaps ranges[0][0]"}},
		{"overlap across sets", map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/16"}}, {{"subnet": "10.0.5.0/24"}}}}, nil, "", cnierr.InvalidConfig, []string{`"ranges[1][0]"`, "overlaps"}},
		{"legacy overlap", map[string]any{"subnet": "10.0.0.0/24", "ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}}}, nil, "", cnierr.InvalidConfig, []string{`"ranges[0][0]"`, "overlaps the ipam-level range"}},
		{"legacy without subnet", map[string]any{"rangeStart": "10.0.0.4"}, nil, "", cnierr.InvalidConfig, []string{`field "subnet"`}},
		{"legacy bad start", map[string]any{"subnet": "10.0.0.0/24", "rangeStart": "x"}, nil, "", cnierr.InvalidConfig, []string{`field "rangeStart"`}},
		{"empty set", map[string]any{"ranges": [][]map[string]string{{}}}, nil, "", cnierr.InvalidConfig, []string{`"ranges[0]"`, "empty"}},
		{"bad route dst", map[string]any{"subnet": "10.0.0.0/24", "routes": []map[string]string{{"dst": "10.0.0.1"}}}, nil, "", cnierr.InvalidConfig, []string{`"routes[0].dst"`}},
		{"bad route gw", map[string]any{"subnet": "10.0.0.0/24", "routes": []map[string]string{{"dst": "0.0.0.0/0", "gw": "fd00::1"}}}, nil, "", cnierr.InvalidConfig, []string{`"routes[0].gw"`, "family"}},
		{"relative dataDir", map[string]any{"subnet": "10.0.0.0/24", "dataDir": "rel/dir"}, nil, "", cnierr.InvalidConfig, []string{`"dataDir"`, "absolute"}},
		{"name escape", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"name": "../etc"}, "", cnierr.InvalidConfig, []string{`field "name"`}},
		{"name slash", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"name": "a/b"}, "", cnierr.InvalidConfig, []string{`field "name"`}},
		{"name dotdot", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"name": ".."}, "", cnierr.InvalidConfig, []string{`field "name"`}},
		{"name empty", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"name": ""}, "", cnierr.InvalidConfig, []string{`field "name"`}},
		{"no ipam", nil, map[string]any{"ipam": nil}, "", cnierr.InvalidConfig, []string{`field "ipam"`}},
		{"subnet type", map[string]any{"subnet": 5}, nil, "", cnierr.DecodingFailure, []string{"subnet"}},
		{"ranges type", map[string]any{"ranges": "x"}, nil, "", cnierr.DecodingFailure, []string{"ranges"}},
		{"args ip bad", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"x"}}}}, "", cnierr.InvalidConfig, []string{`"args.cni.ips[0]"`}},
		{"runtime ip bad", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.5", "1.2.3"}}}, "", cnierr.InvalidConfig, []string{`"runtimeConfig.ips[1]"`}},
		{"env ip bad", map[string]any{"subnet": "10.0.0.0/24"}, nil, "IgnoreUnknown=1;IP=zz", cnierr.InvalidEnv, []string{"CNI_ARGS IP"}},
		{"requested outside", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.9.5/24"}}}, "", cnierr.InvalidConfig, []string{`"runtimeConfig.ips[0]"`, "10.0.9.5", "not in any range"}},
		{"requested env outside", map[string]any{"subnet": "10.0.0.0/24"}, nil, "IP=10.0.9.5", cnierr.InvalidEnv, []string{"10.0.9.5"}},
		{"requested gateway", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"10.0.0.1"}}}}, "", cnierr.InvalidConfig, []string{"10.0.0.1", "gateway"}},
		{"two in one set", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.5", "10.0.0.6"}}}, "", cnierr.InvalidConfig, []string{"10.0.0.6", "both in range set 0"}},
		{"runtime range bad", map[string]any{"subnet": "10.0.0.0/24"}, map[string]any{"runtimeConfig": map[string]any{"ipRanges": [][]map[string]string{{{"subnet": "10.1.0.0/33"}}}}}, "", cnierr.InvalidConfig, []string{`"runtimeConfig.ipRanges[0][0].subnet"`}},
		{"old version two v4", map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "10.1.0.0/24"}}}}, map[string]any{"cniVersion": "0.2.0"}, "", cnierr.InvalidConfig, []string{`"cniVersion"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ipam := tc.ipam
			if ipam == nil {
				ipam = map[string]any{}
			}
			_, err := LoadConfig(netconf(t, "/tmp/x", ipam, tc.top), tc.args)
			wantErr(t, err, tc.code, tc.substr...)
		})
	}
}

func TestConfigOldVersionDualStackOK(t *testing.T) {
	ipam := map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "fd00::/64"}}}}
	if _, err := LoadConfig(netconf(t, "/x", ipam, map[string]any{"cniVersion": "0.2.0"}), ""); err != nil {
		t.Fatal(err)
	}
}

func TestRequestedIPSources(t *testing.T) {
	ipam := map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "fd00::/64"}}, {{"subnet": "10.5.0.0/24"}}}}
	top := map[string]any{
		"args":          map[string]any{"cni": map[string]any{"ips": []string{"fd00::42"}}},
		"runtimeConfig": map[string]any{"ips": []string{"10.5.0.7/24"}},
	}
	c, err := LoadConfig(netconf(t, "/x", ipam, top), "K8S_POD_NAME=x;IP=10.0.0.9;IgnoreUnknown=1")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{mustAddr("10.0.0.9"), mustAddr("fd00::42"), mustAddr("10.5.0.7")}
	if !reflect.DeepEqual(c.Requested, want) {
		t.Fatalf("requested %v", c.Requested)
	}
	// Comma-separated CNI_ARGS IP list.
	c, err = LoadConfig(netconf(t, "/x", ipam, nil), "IP=10.0.0.9,fd00::43")
	if err != nil {
		t.Fatal(err)
	}
	if c.Requested[0] != mustAddr("10.0.0.9") || c.Requested[1] != mustAddr("fd00::43") || c.Requested[2].IsValid() {
		t.Fatalf("requested %v", c.Requested)
	}

	// The same address from two sources is one request.
	c, err = LoadConfig(netconf(t, "/x", ipam, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.9"}}}), "IP=10.0.0.9")
	if err != nil || c.Requested[0] != mustAddr("10.0.0.9") {
		t.Fatal(err, c.Requested)
	}

	// End to end: the requested addresses are the ones returned.
	dir := t.TempDir()
	a := cmdArgs("c1", "eth0", netconf(t, dir, ipam, top))
	a.Args = "IP=10.0.0.9"
	res := addOK(t, a)
	if got := resultAddrs(res); !reflect.DeepEqual(got, []string{"10.0.0.9/24", "fd00::42/64", "10.5.0.7/24"}) {
		t.Fatal(got)
	}
}

func TestIPRangesOverride(t *testing.T) {
	ipam := map[string]any{"subnet": "10.0.0.0/24", "ranges": [][]map[string]string{{{"subnet": "10.1.0.0/24"}}}}
	top := map[string]any{"runtimeConfig": map[string]any{"ipRanges": [][]map[string]string{{{"subnet": "192.168.7.0/24", "rangeStart": "192.168.7.100"}}}}}
	c, err := LoadConfig(netconf(t, "/x", ipam, top), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Ranges) != 1 || c.Ranges[0][0].Subnet.String() != "192.168.7.0/24" || c.Ranges[0][0].Field != "runtimeConfig.ipRanges[0][0]" {
		t.Fatalf("%+v", c.Ranges)
	}
	dir := t.TempDir()
	res := addOK(t, cmdArgs("c1", "eth0", netconf(t, dir, ipam, top)))
	if got := resultAddrs(res); !reflect.DeepEqual(got, []string{"192.168.7.100/24"}) {
		t.Fatal(got)
	}
}

func TestIDValidation(t *testing.T) {
	dir := t.TempDir()
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
	for _, tc := range []struct{ cid, ifn, field string }{
		{"../../etc", "eth0", "CNI_CONTAINERID"},
		{"a/b", "eth0", "CNI_CONTAINERID"},
		{"", "eth0", "CNI_CONTAINERID"},
		{"ok\r\nx", "eth0", "CNI_CONTAINERID"},
		{string(make([]byte, 2000)), "eth0", "CNI_CONTAINERID"},
		{"c1", "..", "CNI_IFNAME"},
		{"c1", "a/b", "CNI_IFNAME"},
		{"c1", "eth0\r\n", "CNI_IFNAME"},
		{"c1", "abcdefghijklmnop", "CNI_IFNAME"},
		{"c1", "", "CNI_IFNAME"},
	} {
		_, err := Plugin.Add(cmdArgs(tc.cid, tc.ifn, stdin))
		wantErr(t, err, cnierr.InvalidEnv, tc.field)
		wantErr(t, Plugin.Del(cmdArgs(tc.cid, tc.ifn, stdin)), cnierr.InvalidEnv, tc.field)
	}
	// Nothing was written outside (or inside) the data dir.
	res, _ := dirState(t, dir)
	if len(res) != 0 {
		t.Fatal(res)
	}
	if _, err := os.Stat(filepath.Join(dir, "..", "etc")); err == nil {
		t.Fatal("escaped")
	}
}

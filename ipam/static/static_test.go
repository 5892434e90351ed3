package static

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cnierr"
)

func conf(t *testing.T, ipam map[string]any, top map[string]any) []byte {
	t.Helper()
	ip := map[string]any{"type": "static"}
	for k, v := range ipam {
		ip[k] = v
	}
	m := map[string]any{"cniVersion": "1.1.0", "name": "net", "type": "bridge", "ipam": ip}
	for k, v := range top {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func args(stdin []byte, cniArgs string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/x", StdinData: stdin, Args: cniArgs}
}

func wantErr(t *testing.T, err error, code uint, substrs ...string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want CNI error code %d, got %v", code, err)
	}
	if te.Code != code {
		t.Fatalf("want code %d, got %d: %s", code, te.Code, te.Msg)
	}
	for _, s := range substrs {
		if !strings.Contains(te.Msg, s) {
			t.Fatalf("%q does not contain %q", te.Msg, s)
		}
	}
}

func add(t *testing.T, a *skel.CmdArgs) *current.Result {
	t.Helper()
	r, err := Plugin.Add(a)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*current.Result)
}

func addrs(r *current.Result) []string {
	var out []string
	for _, ip := range r.IPs {
		g := ""
		if ip.Gateway != nil {
			g = " via " + ip.Gateway.String()
		}
		out = append(out, ip.Address.String()+g)
	}
	return out
}

var fullIPAM = map[string]any{
	"addresses": []map[string]string{
		{"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
		{"address": "fd00::5/64"},
	},
	"routes": []map[string]any{{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254", "mtu": 1400}},
	"dns":    map[string]any{"nameservers": []string{"10.10.0.53"}, "domain": "example.com", "search": []string{"example.com"}, "options": []string{"ndots:2"}},
}

func TestAddAllFields(t *testing.T) {
	r := add(t, args(conf(t, fullIPAM, nil), ""))
	if got := addrs(r); !reflect.DeepEqual(got, []string{"10.10.0.5/24 via 10.10.0.1", "fd00::5/64"}) {
		t.Fatal(got)
	}
	if len(r.Routes) != 2 || r.Routes[1].MTU != 1400 || r.Routes[1].GW.String() != "10.10.0.254" {
		t.Fatalf("%+v", r.Routes)
	}
	d := r.DNS
	if !reflect.DeepEqual(d.Nameservers, []string{"10.10.0.53"}) || d.Domain != "example.com" || d.Search[0] != "example.com" || d.Options[0] != "ndots:2" {
		t.Fatalf("%+v", d)
	}
}

func TestRuntimeSources(t *testing.T) {
	ipam := map[string]any{"addresses": []map[string]string{{"address": "10.10.0.5/24"}}}
	// CNI_ARGS IP appends (comma list), GATEWAY sets the matching gateway.
	r := add(t, args(conf(t, ipam, nil), "IgnoreUnknown=1;IP=10.20.0.7/16,fd01::7/64;GATEWAY=10.20.0.1"))
	if got := addrs(r); !reflect.DeepEqual(got, []string{"10.10.0.5/24", "10.20.0.7/16 via 10.20.0.1", "fd01::7/64"}) {
		t.Fatal(got)
	}
	// args.cni.ips replaces.
	top := map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"10.30.0.3/24"}}}}
	if got := addrs(add(t, args(conf(t, ipam, top), ""))); !reflect.DeepEqual(got, []string{"10.30.0.3/24"}) {
		t.Fatal(got)
	}
	// runtimeConfig.ips replaces args.cni.ips too; GATEWAY still applies.
	top["runtimeConfig"] = map[string]any{"ips": []string{"10.40.0.4/24", "fd02::4/64"}}
	if got := addrs(add(t, args(conf(t, ipam, top), "GATEWAY=fd02::1"))); !reflect.DeepEqual(got, []string{"10.40.0.4/24", "fd02::4/64 via fd02::1"}) {
		t.Fatal(got)
	}
	// No configured addresses, only runtime ones.
	if got := addrs(add(t, args(conf(t, nil, nil), "IP=10.1.1.1/24"))); !reflect.DeepEqual(got, []string{"10.1.1.1/24"}) {
		t.Fatal(got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ipam    map[string]any
		top     map[string]any
		cniArgs string
		code    uint
		substr  []string
	}{
		{"no ipam", nil, map[string]any{"ipam": nil}, "", cnierr.InvalidConfig, []string{`field "ipam"`}},
		{"no addresses", map[string]any{}, nil, "", cnierr.InvalidConfig, []string{`field "addresses"`}},
		{"missing address", map[string]any{"addresses": []map[string]string{{"gateway": "10.0.0.1"}}}, nil, "", cnierr.InvalidConfig, []string{`static: field "addresses[0].address"`}},
		{"not cidr", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5"}}}, nil, "", cnierr.InvalidConfig, []string{`"addresses[0].address"`, "CIDR"}},
		{"bad gateway", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5/24", "gateway": "x"}}}, nil, "", cnierr.InvalidConfig, []string{`"addresses[0].gateway"`}},
		{"gateway family", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5/24", "gateway": "fd00::1"}}}, nil, "", cnierr.InvalidConfig, []string{`"addresses[0].gateway"`, "family"}},
		{"duplicate", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5/24"}, {"address": "10.0.0.5/16"}}}, nil, "", cnierr.InvalidConfig, []string{`"addresses[1].address"`}},
		{"bad route", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5/24"}}, "routes": []map[string]string{{"dst": "nope"}}}, nil, "", cnierr.InvalidConfig, []string{`"routes[0].dst"`}},
		{"bad nameserver", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5/24"}}, "dns": map[string]any{"nameservers": []string{"dns.example"}}}, nil, "", cnierr.InvalidConfig, []string{`"dns.nameservers[0]"`}},
		{"addresses type", map[string]any{"addresses": "10.0.0.5/24"}, nil, "", cnierr.DecodingFailure, []string{"addresses"}},
		{"runtime ip", nil, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.5"}}}, "", cnierr.InvalidConfig, []string{`"runtimeConfig.ips[0]"`}},
		{"args ip", nil, map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"10.0.0.5/24", "x"}}}}, "", cnierr.InvalidConfig, []string{`"args.cni.ips[1]"`}},
		{"env ip", nil, nil, "IP=10.0.0.5", cnierr.InvalidEnv, []string{"CNI_ARGS IP"}},
		{"env gateway", nil, nil, "IP=10.0.0.5/24;GATEWAY=10.9.9.9", cnierr.InvalidEnv, []string{"CNI_ARGS GATEWAY", "10.9.9.9"}},
		{"old version", map[string]any{"addresses": []map[string]string{{"address": "10.0.0.5/24"}, {"address": "10.0.1.5/24"}}}, map[string]any{"cniVersion": "0.2.0"}, "", cnierr.InvalidConfig, []string{`"cniVersion"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Plugin.Add(args(conf(t, tc.ipam, tc.top), tc.cniArgs))
			wantErr(t, err, tc.code, tc.substr...)
		})
	}
}

func TestDelCheckGC(t *testing.T) {
	good := conf(t, fullIPAM, nil)
	if err := Plugin.Del(args(good, "")); err != nil {
		t.Fatal(err)
	}
	if err := Plugin.GC(args(good, "")); err != nil {
		t.Fatal(err)
	}
	// GC and DEL without addresses (runtime-supplied ones are absent) are fine.
	if err := Plugin.GC(args(conf(t, nil, nil), "")); err != nil {
		t.Fatal(err)
	}
	bad := conf(t, map[string]any{"addresses": []map[string]string{{"address": "bogus"}}}, nil)
	// static keeps no state: DEL and GC succeed whatever the config says
	// (docs/del.md); CHECK validates.
	for _, stdin := range [][]byte{bad, []byte(`{`), []byte(`{"cniVersion":"1.0.0","name":"n"}`)} {
		if err := Plugin.Del(args(stdin, "IP=bogus")); err != nil {
			t.Errorf("DEL %s: %v", stdin, err)
		}
		if err := Plugin.GC(args(stdin, "")); err != nil {
			t.Errorf("GC %s: %v", stdin, err)
		}
	}
	wantErr(t, Plugin.Check(args(bad, "")), cnierr.InvalidConfig, "addresses[0].address")
	if err := Plugin.Check(args(good, "")); err != nil {
		t.Fatal(err)
	}
	// CHECK against a prevResult.
	r := add(t, args(good, ""))
	withPrev := func(res *current.Result) []byte {
		var m map[string]any
		_ = json.Unmarshal(good, &m)
		b, _ := json.Marshal(res)
		var pr map[string]any
		_ = json.Unmarshal(b, &pr)
		m["prevResult"] = pr
		out, _ := json.Marshal(m)
		return out
	}
	if err := Plugin.Check(args(withPrev(r), "")); err != nil {
		t.Fatal(err)
	}
	short := *r
	short.IPs = r.IPs[:1]
	wantErr(t, Plugin.Check(args(withPrev(&short), "")), cnierr.Internal, "fd00::5/64", "not in prevResult")
}

func TestResultVersions(t *testing.T) {
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		r, err := Plugin.Add(args(conf(t, fullIPAM, map[string]any{"cniVersion": v}), ""))
		if err != nil {
			t.Fatal(v, err)
		}
		conv, err := r.GetAsVersion(v)
		if err != nil {
			t.Fatal(v, err)
		}
		b, _ := json.Marshal(conv)
		s := string(b)
		if !strings.Contains(s, `"cniVersion":"`+v+`"`) || !strings.Contains(s, "10.10.0.5/24") || !strings.Contains(s, "fd00::5/64") || !strings.Contains(s, "10.10.0.53") {
			t.Fatalf("%s: %s", v, s)
		}
	}
}

package firewall

import (
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables/expr"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func wantErr(t *testing.T, err error, code uint, substr ...string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want a *types.Error with code %d, got %T: %v", code, err, err)
	}
	if te.Code != code {
		t.Errorf("code = %d, want %d (%s)", te.Code, code, te.Msg)
	}
	for _, s := range substr {
		if !strings.Contains(te.Msg, s) {
			t.Errorf("message %q does not contain %q", te.Msg, s)
		}
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct{ conf, policy string }{
		{`{"name":"n","type":"firewall"}`, PolicyOpen},
		{`{"name":"n","backend":"iptables","iptablesAdminChainName":"MY-ADMIN","ingressPolicy":""}`, PolicyOpen},
		{`{"name":"n","backend":"firewalld","firewalldZone":"trusted","ingressPolicy":"open"}`, PolicyOpen},
		{`{"name":"n","ingressPolicy":"same-bridge"}`, PolicySameBridge},
		{`{"name":"n","ingressPolicy":"isolated"}`, PolicyIsolated},
		// Any backend, as in the reference (docs/plugins/firewall.md).
		{`{"name":"n","backend":"ipfw"}`, PolicyOpen},
		{`{"name":"n","backend":"nftables"}`, PolicyOpen},
	} {
		c, err := ParseConfig([]byte(tc.conf))
		if err != nil {
			t.Fatalf("%s: %v", tc.conf, err)
		}
		if c.Policy != tc.policy || c.Network != "n" {
			t.Errorf("%s: %+v", tc.conf, c)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		conf string
		code uint
		msg  []string
	}{
		{`{"ingressPolicy":"closed"}`, 7, []string{`field "ingressPolicy"`, `"closed"`, "same-bridge"}},
		{`{"ingressPolicy":1}`, 6, []string{`"ingressPolicy"`, "a string"}},
		{`{`, 6, []string{"not valid JSON"}},
	} {
		_, err := ParseConfig([]byte(tc.conf))
		wantErr(t, err, tc.code, tc.msg...)
	}
}

func result(t *testing.T, ips ...string) *current.Result {
	t.Helper()
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{
		{Name: "cni0"}, {Name: "veth1234"}, {Name: "eth0", Sandbox: "/run/netns/p"},
	}}
	for _, s := range ips {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		r.IPs = append(r.IPs, &current.IPConfig{Address: *n, Interface: current.Int(2)})
	}
	return r
}

func TestCompileAndGolden(t *testing.T) {
	var out strings.Builder
	out.WriteString(RenderRuleset())
	for _, pol := range []string{"", "same-bridge", "isolated"} {
		c, err := ParseConfig([]byte(`{"name":"net1","ingressPolicy":"` + pol + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		a, err := Compile(c, "podnet:test:eth0:ctr-"+c.Policy, result(t, "10.1.0.5/24", "fd00::5/64", "10.1.0.5/24"))
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Addrs) != 2 || len(a.Addrs[0]) != 4 {
			t.Errorf("addresses %v (want the duplicate dropped, IPv4 in 4 bytes)", a.Addrs)
		}
		out.WriteString("\n# ingressPolicy " + c.Policy + "\n")
		out.WriteString(RenderElements(a.Elements()))
	}
	golden := filepath.Join("testdata", "ruleset.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestCompileAndGolden -update)", err)
	}
	if out.String() != string(want) {
		t.Errorf("rendering differs from %s (go test -update to accept):\n%s", golden, out.String())
	}
}

func TestCompileNeedsBridge(t *testing.T) {
	c, _ := ParseConfig([]byte(`{"name":"n","ingressPolicy":"same-bridge"}`))
	r := result(t, "10.1.0.5/24")
	r.Interfaces = nil
	_, err := Compile(c, "tag", r)
	wantErr(t, err, 7, "ingressPolicy", "bridge")
	r = result(t, "10.1.0.5/24")
	r.Interfaces[0].Sandbox = "/run/netns/x"
	_, err = Compile(c, "tag", r)
	wantErr(t, err, 7, "inside sandbox")
	// No addresses, nothing to isolate: no bridge needed.
	r = result(t)
	r.Interfaces = nil
	if a, err := Compile(c, "tag", r); err != nil || len(a.Elements()) != 0 {
		t.Errorf("no addresses: %v %v", a, err)
	}
}

func TestRulesEndInTheirVerdict(t *testing.T) {
	kinds := map[string]expr.VerdictKind{"drop": expr.VerdictDrop, "accept": expr.VerdictAccept, "admin": expr.VerdictJump}
	for _, r := range forwardRules() {
		f := strings.Fields(r.text)
		v, ok := r.exprs[len(r.exprs)-1].(*expr.Verdict)
		if !ok || v.Kind != kinds[f[len(f)-1]] {
			t.Errorf("rule %q ends with %#v", r.text, r.exprs[len(r.exprs)-1])
		}
	}
}

func TestAddNeedsPrevResult(t *testing.T) {
	a := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/nonexistent",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"firewall"}`)}
	_, err := Plugin.Add(a)
	wantErr(t, err, 7, `field "prevResult"`, "required")
	wantErr(t, Plugin.Check(a), 7, `field "prevResult"`)
}

// TestDelDecodes: what ADD refuses, DEL and GC decode (docs/del.md); only
// JSON of the wrong type stops them.
func TestDelDecodes(t *testing.T) {
	for _, tc := range []struct{ conf, field string }{
		{`{"name":"n","ingressPolicy":"closed"}`, `field "ingressPolicy"`},
	} {
		if _, err := ParseConfig([]byte(tc.conf)); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("ParseConfig(%s) = %v, want an error naming %s", tc.conf, err, tc.field)
		}
		c, err := Decode([]byte(tc.conf))
		if err != nil || c.Network != "n" {
			t.Errorf("Decode(%s) = %+v, %v", tc.conf, c, err)
		}
	}
	_, err := Decode([]byte(`{"name":"n","ingressPolicy":1}`))
	wantErr(t, err, 6, `"ingressPolicy"`)
}

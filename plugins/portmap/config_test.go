package portmap

import (
	"encoding/json"
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

	"github.com/podnet/podnet/internal/cnierr"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const prev = `"prevResult":{"cniVersion":"1.1.0",
	"interfaces":[{"name":"br0","mac":"02:00:00:00:00:01"},{"name":"veth1","mac":"02:00:00:00:00:02"},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/x"}],
	"ips":[{"interface":2,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":2,"address":"fd01::5/64","gateway":"fd01::1"},{"interface":0,"address":"10.1.0.1/24"}]}`

func conf(extra string) []byte {
	s := `{"cniVersion":"1.1.0","name":"net1","type":"portmap"`
	if extra != "" {
		s += "," + extra
	}
	return []byte(s + "}")
}

func TestParseDefaultsAndKeys(t *testing.T) {
	c, err := ParseConfig(conf(`"runtimeConfig":{"portMappings":[
		{"hostPort":80,"containerPort":8080},
		{"HostPort":53,"ContainerPort":5353,"Protocol":"UDP","HostIP":"192.0.2.1"},
		{"hostport":9,"CONTAINERPORT":9,"protocol":"sctp","hostIP":"::"},
		{"hostPort":443,"containerPort":443,"protocol":"tcp","hostIP":"","podName":"ignored"}]},` + prev))
	if err != nil {
		t.Fatal(err)
	}
	if !c.SNAT || c.MasqAll || c.MarkBit != 13 || c.Mark() != 0x2000 || c.DataDir != DefaultDataDir || c.Network != "net1" {
		t.Errorf("defaults: %+v", c)
	}
	want := []string{"tcp *:80 -> :8080", "udp 192.0.2.1:53 -> :5353", "sctp :::9 -> :9", "tcp *:443 -> :443"}
	if len(c.Mappings) != len(want) {
		t.Fatalf("mappings %v", c.Mappings)
	}
	for i, m := range c.Mappings {
		if m.String() != want[i] {
			t.Errorf("mapping %d: %s, want %s", i, m, want[i])
		}
	}
	if len(c.Mappings[1].HostIP) != 4 {
		t.Errorf("v4 hostIP not in 4-byte form")
	}
	v4, v6 := PodAddrs(c.Prev, "eth0")
	if v4.String() != "10.1.0.5" || v6.String() != "fd01::5" {
		t.Errorf("pod addrs %s %s", v4, v6)
	}
	if v4, v6 := PodAddrs(c.Prev, "eth1"); v4 != nil || v6 != nil {
		t.Errorf("addrs of another interface: %s %s", v4, v6)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		extra string
		code  uint
		msg   string
	}{
		{`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80},{"hostPort":70000,"containerPort":80}]}`, 7,
			`field "runtimeConfig.portMappings[1].hostPort": 70000 out of range`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}`, 7, `portMappings[0].hostPort": 0 out of range`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":-1}]}`, 7, `portMappings[0].containerPort": -1 out of range`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}`, 7, `portMappings[0].protocol": "icmp" is not tcp, udp or sctp`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"nope"}]}`, 7, `portMappings[0].hostIP": "nope" is not an IP address`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":"80","containerPort":80}]}`, 7, `portMappings[0].hostPort": expected an integer, got "80"`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":80,"HostPort":81,"containerPort":80}]}`, 7, `portMappings[0].hostPort": given twice`},
		{`"runtimeConfig":{"portMappings":[7]}`, 7, `"runtimeConfig.portMappings[0]": expected an object`},
		{`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80},{"HostPort":80,"ContainerPort":81,"Protocol":"TCP"}]}`, 7,
			`portMappings[1]": tcp *:80 -> :81 maps the same host port as runtimeConfig.portMappings[0]`},
		{`"markMasqBit":32`, 7, `field "markMasqBit": 32 is out of range 0-31`},
		{`"conditionsV4":["-s","1.2.3.4"]`, 2, `field "conditionsV4" is not supported: needs an iptables/nft rule parser`},
		{`"conditionsV6":["ip6 saddr ::1"]`, 2, `field "conditionsV6" is not supported: needs an iptables/nft rule parser`},
		{`"externalSetMarkChain":"KUBE-MARK-MASQ"`, 2, `field "externalSetMarkChain" is not supported`},
		{`"backend":"iptables"`, 2, `field "backend" is not supported`},
		{`"backend":"ebpf"`, 7, `field "backend": "ebpf" is not a backend`},
		{`"snat":"yes"`, 6, `field "snat"`},
	} {
		_, err := ParseConfig(conf(tc.extra))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, tc.msg) {
			t.Errorf("%s:\n got %v\nwant code %d, %q", tc.extra, err, tc.code, tc.msg)
		}
	}
	// An empty conditions list is no condition.
	if _, err := ParseConfig(conf(`"conditionsV4":[]`)); err != nil {
		t.Errorf("empty conditionsV4: %v", err)
	}
}

func TestPortMappingUnmarshal(t *testing.T) {
	var pms []PortMapping
	if err := jsonUnmarshal(`[{"HostPort":1,"ContainerPort":2,"Protocol":"udp","HostIP":"::1"},{"hostPort":3,"containerPort":4}]`, &pms); err != nil {
		t.Fatal(err)
	}
	if pms[0] != (PortMapping{1, 2, "udp", "::1"}) || pms[1] != (PortMapping{HostPort: 3, ContainerPort: 4}) {
		t.Errorf("%+v", pms)
	}
}

func TestAddWithoutKernel(t *testing.T) {
	dir := t.TempDir()
	// Mappings but no prevResult.
	_, err := add(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: conf(`"dataDir":"` + dir + `","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80}]}`)})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != cnierr.InvalidConfig || !strings.Contains(te.Msg, "prevResult") {
		t.Errorf("no prevResult: %v", err)
	}
	// No mappings: prevResult comes back as is, nothing is touched.
	res, err := add(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: conf(`"dataDir":"` + dir + `/x",` + prev)})
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*current.Result)
	if len(r.IPs) != 3 || len(r.Interfaces) != 3 {
		t.Errorf("result %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty mappings created the data dir: %v", err)
	}
	res, err = add(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: conf(`"runtimeConfig":{"portMappings":[]}`)})
	if err != nil || res == nil {
		t.Errorf("no mappings, no prevResult: %v %v", res, err)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update to accept):\n--- got\n%s--- want\n%s", p, got, want)
	}
}

func TestDesiredGolden(t *testing.T) {
	c, err := ParseConfig(conf(`"runtimeConfig":{"portMappings":[
		{"hostPort":80,"containerPort":8080},
		{"hostPort":53,"containerPort":53,"protocol":"udp"},
		{"hostPort":8443,"containerPort":443,"hostIP":"192.0.2.7"},
		{"hostPort":8444,"containerPort":443,"hostIP":"2001:db8::7"},
		{"hostPort":9000,"containerPort":9000,"protocol":"sctp","hostIP":"0.0.0.0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pod4, pod6 := net.ParseIP("10.1.0.5").To4(), net.ParseIP("fd01::5")
	var b strings.Builder
	b.WriteString("# dual-stack, snat\n")
	b.WriteString(Render(Desired(c, pod4, pod6, "podnet:0123456789abcdef:eth0:ctr1")))
	b.WriteString("# IPv4 only, masqAll\n")
	c.MasqAll = true
	b.WriteString(Render(Desired(c, pod4, nil, "podnet:0123456789abcdef:eth0:ctr1")))
	b.WriteString("# IPv6 only, snat off\n")
	c.MasqAll, c.SNAT = false, false
	b.WriteString(Render(Desired(c, nil, pod6, "podnet:0123456789abcdef:eth0:ctr1")))
	golden(t, "desired.golden", b.String())
}

func TestElemRoundTrip(t *testing.T) {
	c, _ := ParseConfig(conf(`"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080},{"hostPort":81,"containerPort":1,"hostIP":"2001:db8::1","protocol":"udp"}]}`))
	for _, e := range Desired(c, net.ParseIP("10.1.0.5"), net.ParseIP("fd01::5"), "o") {
		d, err := decodeElem(e.Set, e.Key(), e.Val(), e.Owner)
		if err != nil || !same(d, e) || d.String() != e.String() {
			t.Errorf("%s -> %s, %v", e, d, err)
		}
		if _, err := decodeElem(e.Set, append(e.Key(), 0), e.Val(), ""); err == nil {
			t.Errorf("%s: long key accepted", e.Set)
		}
	}
}

func TestPlanAdd(t *testing.T) {
	mk := func(port uint16, pod, owner string) Elem {
		return Elem{Set: mapPorts4, Proto: protoTCP, HostPort: port, PodIP: net.ParseIP(pod).To4(), PodPort: 80, Owner: owner}
	}
	cur := []Elem{
		mk(80, "10.0.0.2", "a"),  // identical: stays
		mk(81, "10.0.0.2", "a"),  // a's stale mapping: goes
		mk(82, "10.0.0.9", "b"),  // b's port that a now takes over: goes
		mk(83, "10.0.0.9", "b"),  // b's other port: untouched
		mk(84, "10.0.0.2", "b2"), // same value, other owner: taken over
	}
	want := []Elem{mk(80, "10.0.0.2", "a"), mk(82, "10.0.0.2", "a"), mk(84, "10.0.0.2", "a")}
	p := planAdd(cur, want, "a")
	if got := Render(p.del); got != Render([]Elem{cur[1], cur[2], cur[4]}) {
		t.Errorf("del:\n%s", got)
	}
	if got := Render(p.add); got != Render(want[1:]) {
		t.Errorf("add:\n%s", got)
	}
	if d := planDel(cur, func(o string) bool { return o == "b" }); len(d.del) != 2 || len(d.add) != 0 {
		t.Errorf("planDel %+v", d)
	}
	if m := missing(cur, want); len(m) != 2 {
		t.Errorf("missing %v", m)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func TestOldPrevResult(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"0.4.0","name":"n","type":"portmap",
		"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80}]},
		"prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
		"ips":[{"version":"4","interface":0,"address":"10.2.0.9/24"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if v4, v6 := PodAddrs(c.Prev, "eth0"); v4.String() != "10.2.0.9" || v6 != nil {
		t.Errorf("%s %s", v4, v6)
	}
}

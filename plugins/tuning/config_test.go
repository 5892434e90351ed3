package tuning

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func cniErr(t *testing.T, err error) *types.Error {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want a *types.Error, got %T: %v", err, err)
	}
	return te
}

func wantErr(t *testing.T, err error, code uint, substr ...string) {
	t.Helper()
	te := cniErr(t, err)
	if te.Code != code {
		t.Errorf("code = %d, want %d (%s)", te.Code, code, te.Msg)
	}
	for _, s := range substr {
		if !strings.Contains(te.Msg, s) {
			t.Errorf("message %q does not contain %q", te.Msg, s)
		}
	}
}

func TestParseFull(t *testing.T) {
	c, err := ParseConfig([]byte(`{
		"cniVersion": "1.0.0", "name": "n", "type": "tuning",
		"sysctl": {"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.rp_filter": "2", "net/ipv4/conf/eth0.5/forwarding": "1"},
		"mac": "0a:00:00:00:00:01", "mtu": 1400, "promisc": true, "allmulti": false, "txQLen": 0
	}`), "eth0", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []Sysctl{
		{Orig: "net.core.somaxconn", Key: "net/core/somaxconn", Value: "500"},
		{Orig: "net.ipv4.conf.IFNAME.rp_filter", Key: "net/ipv4/conf/eth0/rp_filter", Value: "2"},
		{Orig: "net/ipv4/conf/eth0.5/forwarding", Key: "net/ipv4/conf/eth0.5/forwarding", Value: "1"},
	}
	if len(c.Sysctls) != len(want) {
		t.Fatalf("sysctls = %+v", c.Sysctls)
	}
	for i := range want {
		if c.Sysctls[i] != want[i] {
			t.Errorf("sysctl %d = %+v, want %+v", i, c.Sysctls[i], want[i])
		}
	}
	if c.Mac.String() != "0a:00:00:00:00:01" || c.MTU != 1400 || c.Promisc == nil || !*c.Promisc ||
		c.Allmulti == nil || *c.Allmulti || c.TxQLen == nil || *c.TxQLen != 0 {
		t.Errorf("link fields: %+v", c)
	}
	if c.DataDir != DefaultDataDir || c.Network != "n" {
		t.Errorf("dataDir %q network %q", c.DataDir, c.Network)
	}
}

func TestParseNothing(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"tuning","promisc":false}`), "eth0", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.linkChanges() || len(c.Sysctls) != 0 {
		t.Errorf("want no changes (promisc:false is a no-op like the reference), got %+v", c)
	}
}

func TestIFNAMEWithDots(t *testing.T) {
	c, err := ParseConfig([]byte(`{"name":"n","sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1"}}`), "eth0.5", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Sysctls[0].Key; got != "net/ipv4/conf/eth0.5/rp_filter" {
		t.Errorf("key = %q", got)
	}
}

func TestMacPrecedence(t *testing.T) {
	base := `{"name":"n","mac":"0a:00:00:00:00:01"%s}`
	cases := []struct {
		extra, env, want string
	}{
		{"", "", "0a:00:00:00:00:01"},
		{"", "IgnoreUnknown=1;MAC=0a:00:00:00:00:02;K8S_POD_NAME=x", "0a:00:00:00:00:02"},
		{`,"runtimeConfig":{"mac":"0a:00:00:00:00:03"}`, "MAC=0a:00:00:00:00:02", "0a:00:00:00:00:03"},
		{`,"runtimeConfig":{"mac":"0a:00:00:00:00:03"},"args":{"cni":{"mac":"0a:00:00:00:00:04"}}`, "MAC=0a:00:00:00:00:02", "0a:00:00:00:00:04"},
	}
	for _, tc := range cases {
		c, err := ParseConfig([]byte(strings.Replace(base, "%s", tc.extra, 1)), "eth0", tc.env)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if c.Mac.String() != tc.want {
			t.Errorf("%+v: mac = %s", tc, c.Mac)
		}
	}
}

func TestArgsOverride(t *testing.T) {
	c, err := ParseConfig([]byte(`{"name":"n","mtu":1400,"sysctl":{"net.core.somaxconn":"1","net.ipv4.ip_forward":"0"},
		"args":{"cni":{"mtu":1300,"txQLen":7,"promisc":false,"allmulti":true,"sysctl":{"net/core/somaxconn":"2","net.ipv4.tcp_syncookies":"1"}}}}`), "eth0", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1300 || *c.TxQLen != 7 || c.Promisc == nil || *c.Promisc || !*c.Allmulti {
		t.Errorf("args not applied: %+v", c)
	}
	got := []string{}
	for _, s := range c.Sysctls {
		got = append(got, s.Key+"="+s.Value)
	}
	want := "net/core/somaxconn=2 net/ipv4/ip_forward=0 net/ipv4/tcp_syncookies=1"
	if strings.Join(got, " ") != want {
		t.Errorf("sysctls = %v, want %s", got, want)
	}
}

func TestBadFields(t *testing.T) {
	cases := []struct {
		name, conf, env string
		code            uint
		msg             []string
	}{
		{"outside net", `{"sysctl":{"kernel.pid_max":"100"}}`, "", 7, []string{`field "sysctl"`, `"kernel.pid_max"`, "outside net."}},
		{"net alone", `{"sysctl":{"net":"1"}}`, "", 7, []string{`"net"`}},
		{"dotdot", `{"sysctl":{"net/../kernel/pid_max":"1"}}`, "", 7, []string{"not a valid sysctl name"}},
		{"dup literal", `{"sysctl":{"net.core.somaxconn":"1","net.core.somaxconn":"2"}}`, "", 7, []string{"given twice"}},
		{"dup normalised", `{"sysctl":{"net.core.somaxconn":"1","net/core/somaxconn":"2"}}`, "", 7, []string{`"net.core.somaxconn"`, `"net/core/somaxconn"`, "same sysctl"}},
		{"dup IFNAME", `{"sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1","net.ipv4.conf.eth0.rp_filter":"2"}}`, "", 7, []string{"same sysctl net/ipv4/conf/eth0/rp_filter"}},
		{"dup in args", `{"args":{"cni":{"sysctl":{"net.core.somaxconn":"1","net/core/somaxconn":"2"}}}}`, "", 7, []string{`field "args.cni.sysctl"`}},
		{"sysctl value number", `{"sysctl":{"net.core.somaxconn":5}}`, "", 6, []string{`"net.core.somaxconn"`, "expected a string"}},
		{"sysctl not object", `{"sysctl":["x"]}`, "", 6, []string{`field "sysctl"`, "array"}},
		{"value newline", `{"sysctl":{"net.core.somaxconn":"1\n2"}}`, "", 7, []string{"newline"}},
		{"bad mac", `{"mac":"zz:00:00:00:00:01"}`, "", 7, []string{`field "mac"`, `"zz:00:00:00:00:01"`}},
		{"long mac", `{"mac":"00:00:00:00:00:00:00:01"}`, "", 7, []string{`field "mac"`}},
		{"multicast mac", `{"mac":"01:00:5e:00:00:01"}`, "", 7, []string{"multicast"}},
		{"bad runtime mac", `{"runtimeConfig":{"mac":"nope"}}`, "", 7, []string{`field "runtimeConfig.mac"`}},
		{"bad args mac", `{"args":{"cni":{"mac":"nope"}}}`, "", 7, []string{`field "args.cni.mac"`}},
		{"bad env mac", `{}`, "MAC=nope", 7, []string{`field "CNI_ARGS MAC"`}},
		{"unknown env arg", `{}`, "FOO=bar", 4, []string{"CNI_ARGS"}},
		{"negative mtu", `{"mtu":-1}`, "", 7, []string{`field "mtu"`, "-1 is negative"}},
		{"huge mtu", `{"mtu":70000}`, "", 7, []string{`field "mtu"`, "above the maximum 65535"}},
		{"negative args mtu", `{"args":{"cni":{"mtu":-5}}}`, "", 7, []string{`field "args.cni.mtu"`}},
		{"negative txqlen", `{"txQLen":-1}`, "", 7, []string{`field "txQLen"`}},
		{"mtu string", `{"mtu":"1500"}`, "", 6, []string{`"mtu"`, "expected an integer"}},
		{"promisc string", `{"promisc":"yes"}`, "", 6, []string{`"promisc"`, "true or false"}},
		{"not json", `{`, "", 6, []string{"not valid JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.conf), "eth0", tc.env)
			wantErr(t, err, tc.code, tc.msg...)
		})
	}
}

func TestBadIfName(t *testing.T) {
	_, err := ParseConfig([]byte(`{}`), "a/b", "")
	wantErr(t, err, 4, "CNI_IFNAME")
}

func TestAllowlist(t *testing.T) {
	dir := t.TempDir()
	old := AllowlistFile
	t.Cleanup(func() { AllowlistFile = old })
	AllowlistFile = filepath.Join(dir, "allowlist.conf")

	conf := []byte(`{"sysctl":{"net.core.somaxconn":"1","net.ipv4.conf.IFNAME.rp_filter":"1"}}`)
	if _, err := ParseConfig(conf, "eth0", ""); err != nil {
		t.Fatalf("no allowlist file: %v", err)
	}
	os.WriteFile(AllowlistFile, []byte("# comment\n^net\\.core\\.somaxconn$\n\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n"), 0o644)
	if _, err := ParseConfig(conf, "eth0", ""); err != nil {
		t.Fatalf("allowed keys: %v", err)
	}
	_, err := ParseConfig([]byte(`{"sysctl":{"net.core.somaxconn":"1","net.ipv4.ip_forward":"1"}}`), "eth0", "")
	wantErr(t, err, 7, `"net.ipv4.ip_forward"`, "allowlist", AllowlistFile)

	os.WriteFile(AllowlistFile, []byte("net\\.(\n"), 0o644)
	_, err = ParseConfig(conf, "eth0", "")
	wantErr(t, err, 7, "line 1")

	// An empty allowlist file allows nothing, like the reference.
	os.WriteFile(AllowlistFile, nil, 0o644)
	_, err = ParseConfig(conf, "eth0", "")
	wantErr(t, err, 7, "not allowed")
	// ...but a config without sysctls is fine.
	if _, err := ParseConfig([]byte(`{"mtu":1400}`), "eth0", ""); err != nil {
		t.Fatal(err)
	}
}

func TestNormalizeKey(t *testing.T) {
	for in, want := range map[string]string{
		"net.core.somaxconn":              "net/core/somaxconn",
		"net/core/somaxconn":              "net/core/somaxconn",
		"/net/core/somaxconn/":            "net/core/somaxconn",
		"net.ipv4.conf.IFNAME.rp_filter":  "net/ipv4/conf/eth0/rp_filter",
		"net/ipv4/conf/IFNAME/rp_filter":  "net/ipv4/conf/eth0/rp_filter",
		"net/ipv4/conf/eth0.5/forwarding": "net/ipv4/conf/eth0.5/forwarding",
	} {
		if got := NormalizeKey(in, "eth0"); got != want {
			t.Errorf("NormalizeKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAddNeedsPrevResult(t *testing.T) {
	_, err := Plugin.Add(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/nonexistent",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"tuning","mtu":1400}`)})
	wantErr(t, err, 7, `field "prevResult"`, "required")
	err = Plugin.Check(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/nonexistent",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"tuning","mtu":1400}`)})
	wantErr(t, err, 7, `field "prevResult"`)
}

func TestSameValue(t *testing.T) {
	if !sameValue("4096\t87380\t6291456", "4096 87380  6291456") {
		t.Error("whitespace-separated values should compare equal")
	}
	if sameValue("1", "2") {
		t.Error("1 == 2")
	}
}

func TestStateMergeKeepsOldest(t *testing.T) {
	s := &state{Sysctls: []savedSysctl{{"net/core/somaxconn", "4096"}}, Link: &savedLink{MTU: ptr(1500)}}
	s.merge(&state{Sysctls: []savedSysctl{{"net/core/somaxconn", "1024"}, {"net/ipv4/ip_forward", "0"}},
		Link: &savedLink{MTU: ptr(1400), Mac: "0a:00:00:00:00:01"}})
	if len(s.Sysctls) != 2 || s.Sysctls[0].Value != "4096" || s.Sysctls[1].Value != "0" {
		t.Errorf("sysctls %+v", s.Sysctls)
	}
	if *s.Link.MTU != 1500 || s.Link.Mac != "0a:00:00:00:00:01" {
		t.Errorf("link %+v", s.Link)
	}
}

func TestStoreGCAndAtomicFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir, "net1", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range [][2]string{{"c1", "eth0"}, {"c1", "net1"}, {"c2", "eth0"}} {
		if err := st.save(&state{ContainerID: a[0], IfName: a[1]}); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "net1", "c2", tmpPrefix+"x"), nil, 0o600)
	info, err := os.Stat(st.path("c1", "eth0"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", info, err)
	}
	if info, _ := os.Stat(filepath.Join(dir, "net1")); info.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", info.Mode())
	}
	removed, err := st.gc(map[[2]string]bool{{"c1", "net1"}: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != "c1/eth0,c2/eth0" {
		t.Errorf("removed %v", removed)
	}
	if s, _ := st.load("c1", "net1"); s == nil {
		t.Error("valid attachment's state removed")
	}
	if _, err := os.Stat(filepath.Join(dir, "net1", "c2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty container dir left behind: %v", err)
	}
	st.Close()
}

func TestSetResultMac(t *testing.T) {
	res := &current.Result{Interfaces: []*current.Interface{
		{Name: "eth0", Mac: "0a:00:00:00:00:01"},
		{Name: "eth0", Mac: "0a:00:00:00:00:02", Sandbox: "/run/netns/p"},
	}}
	setResultMac(res, "eth0", "0a:00:00:00:00:09")
	if res.Interfaces[0].Mac != "0a:00:00:00:00:01" || res.Interfaces[1].Mac != "0a:00:00:00:00:09" {
		t.Errorf("sandbox entry preferred: %+v %+v", res.Interfaces[0], res.Interfaces[1])
	}
	res.Interfaces[1].Sandbox = ""
	setResultMac(res, "eth0", "0a:00:00:00:00:08")
	if res.Interfaces[0].Mac != "0a:00:00:00:00:08" || res.Interfaces[1].Mac != "0a:00:00:00:00:08" {
		t.Errorf("without sandboxes every entry: %+v %+v", res.Interfaces[0], res.Interfaces[1])
	}
}

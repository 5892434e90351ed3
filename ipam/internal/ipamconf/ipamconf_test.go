package ipamconf

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestCNIArgs(t *testing.T) {
	m := CNIArgs("IgnoreUnknown=1; IP=10.0.0.5,fd00::5 ;bogus;=x;K8S_POD_NAME=p")
	want := map[string]string{"IgnoreUnknown": "1", "IP": "10.0.0.5,fd00::5", "K8S_POD_NAME": "p"}
	if !reflect.DeepEqual(m, want) {
		t.Fatal(m)
	}
	if got := SplitList(" a, ,b,"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatal(got)
	}
}

func TestParseAddrForms(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.5": "10.0.0.5", "10.0.0.5/24": "10.0.0.5", "::ffff:10.0.0.5": "10.0.0.5", "fd00::5/64": "fd00::5"} {
		a, _, err := ParseAddrOrPrefix(in)
		if err != nil || a.String() != want {
			t.Errorf("%s: %v %v", in, a, err)
		}
	}
	for _, in := range []string{"", "x", "10.0.0.256", "fe80::1%eth0", "10.0.0.5/33"} {
		if _, _, err := ParseAddrOrPrefix(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	p, err := ParseCIDR("10.0.0.5/24")
	if err != nil || p.String() != "10.0.0.5/24" || func() string { n := IPNet(p); return n.String() }() != "10.0.0.5/24" {
		t.Fatal(p, err)
	}
}

func TestResolvConf(t *testing.T) {
	f := filepath.Join(t.TempDir(), "r")
	if err := os.WriteFile(f, []byte("; c\n# c\nnameserver 1.1.1.1\nnameserver\nsearch a b\noptions x\ndomain d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := ResolvConf(f)
	if err != nil || !reflect.DeepEqual(d.Nameservers, []string{"1.1.1.1"}) || d.Domain != "d" || len(d.Search) != 2 || d.Options[0] != "x" {
		t.Fatal(d, err)
	}
	if _, err := ResolvConf(f + "-missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}

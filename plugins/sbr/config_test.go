package sbr

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func wantErr(t *testing.T, err error, code uint, substr ...string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want a *types.Error, got %T: %v", err, err)
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

func TestParse(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"sbr"}`), false)
	if err != nil || c.Table != 0 {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = ParseConfig([]byte(`{"name":"n","table":5000}`), false)
	if err != nil || c.Table != 5000 {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = ParseConfig([]byte(`{"name":"n","table":4294967295}`), false)
	if err != nil || c.Table != 4294967295 {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestBadFields(t *testing.T) {
	cases := []struct {
		name, conf string
		code       uint
		msg        []string
	}{
		{"vrf", `{"vrfname":"blue"}`, 2, []string{`field "vrfname" is not supported`}},
		{"table zero", `{"table":0}`, 7, []string{`field "table"`, "out of range"}},
		{"table negative", `{"table":-3}`, 7, []string{`field "table"`, "-3"}},
		{"table huge", `{"table":4294967296}`, 7, []string{`field "table"`}},
		{"table main", `{"table":254}`, 7, []string{`field "table"`, "reserved"}},
		{"table string", `{"table":"100"}`, 6, []string{`"table"`, "expected an integer"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.conf), false)
			wantErr(t, err, tc.code, tc.msg...)
			// DEL accepts what ADD rejects (except undecodable JSON).
			if tc.code != 6 {
				if _, err := ParseConfig([]byte(tc.conf), true); err != nil {
					t.Errorf("DEL parse: %v", err)
				}
			}
		})
	}
}

func TestAddNeedsPrevResultWithIPs(t *testing.T) {
	_, err := Plugin.Add(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/nonexistent",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"sbr"}`)})
	wantErr(t, err, 7, `field "prevResult"`, "required")

	_, err = Plugin.Add(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/nonexistent",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"sbr","prevResult":{"cniVersion":"1.0.0",
		"interfaces":[{"name":"eth0"},{"name":"net1"}],"ips":[{"address":"10.0.0.2/24","interface":1}]}}`)})
	wantErr(t, err, 7, `field "prevResult"`, `no IP address on interface "eth0"`)

	// DEL with a netns that does not exist is a no-op.
	if err := Plugin.Del(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/nonexistent",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"sbr","vrfname":"x"}`)}); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

func TestPodIPs(t *testing.T) {
	ip := func(s string, idx *int) *current.IPConfig {
		_, n, _ := net.ParseCIDR(s)
		return &current.IPConfig{Address: *n, Interface: idx}
	}
	prev := &current.Result{
		Interfaces: []*current.Interface{{Name: "host0"}, {Name: "eth0"}, {Name: "net1"}},
		IPs: []*current.IPConfig{
			ip("10.0.0.0/24", current.Int(1)),
			ip("10.0.1.0/24", current.Int(2)),
			ip("10.0.2.0/24", nil),
			ip("10.0.3.0/24", current.Int(9)),
			ip("10.0.4.0/24", current.Int(0)),
		},
	}
	var got []string
	for _, c := range podIPs(prev, "eth0") {
		got = append(got, c.Address.String())
	}
	if strings.Join(got, " ") != "10.0.0.0/24 10.0.2.0/24 10.0.3.0/24" {
		t.Errorf("podIPs = %v", got)
	}
}

package bandwidth

import (
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/tc"
)

const tick = 15.625

func conf(body string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"net1","type":"bandwidth"` + body + `}`)
}

func TestParseConfig(t *testing.T) {
	for _, tt := range []struct {
		name          string
		body          string
		ingress       *[2]uint64 // rate, burst
		egress        *[2]uint64
		ingressSource string
	}{
		{name: "nothing", body: ``},
		{name: "zeros", body: `,"ingressRate":0,"ingressBurst":0`},
		{name: "both", body: `,"ingressRate":8000,"ingressBurst":800,"egressRate":16000,"egressBurst":1600`,
			ingress: &[2]uint64{8000, 800}, egress: &[2]uint64{16000, 1600}, ingressSource: "config"},
		{name: "runtime only", body: `,"runtimeConfig":{"bandwidth":{"ingressRate":8000,"ingressBurst":800}}`,
			ingress: &[2]uint64{8000, 800}, ingressSource: "runtimeConfig"},
		{name: "config wins per direction", body: `,"ingressRate":8000,"ingressBurst":800,"runtimeConfig":{"bandwidth":{"ingressRate":1,"ingressBurst":1,"egressRate":24000,"egressBurst":2400}}`,
			ingress: &[2]uint64{8000, 800}, egress: &[2]uint64{24000, 2400}, ingressSource: "config"},
		{name: "explicit zero in config disables runtime", body: `,"egressRate":0,"egressBurst":0,"runtimeConfig":{"bandwidth":{"egressRate":24000,"egressBurst":2400}}`},
		// Kubernetes passes MaxInt32 bits as "unlimited" burst: accepted (the bucket is clamped in tc).
		{name: "k8s burst", body: `,"runtimeConfig":{"bandwidth":{"egressRate":1000000,"egressBurst":2147483647}}`,
			egress: &[2]uint64{1000000, 2147483647}},
		{name: "empty subnets ok", body: `,"unshapedSubnets":[],"shapedSubnets":null`},
		// Unknown to the reference v1.9.1, which ignores them and shapes
		// everything: so does podnet (docs/plugins/bandwidth.md).
		{name: "subnet fields ignored", body: `,"ingressRate":8000,"ingressBurst":800,"unshapedSubnets":["10.0.0.0/8"],"shapedSubnets":["192.168.0.0/16"]`,
			ingress: &[2]uint64{8000, 800}, ingressSource: "config"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(conf(tt.body), tick)
			if err != nil {
				t.Fatal(err)
			}
			check := func(dir string, got *Shape, want *[2]uint64) {
				t.Helper()
				if (got == nil) != (want == nil) {
					t.Fatalf("%s = %+v, want %v", dir, got, want)
				}
				if got == nil {
					return
				}
				if got.RateBits != want[0] || got.BurstBits != want[1] {
					t.Errorf("%s = %d/%d, want %v", dir, got.RateBits, got.BurstBits, *want)
				}
				p, _ := tc.Params(want[0], want[1], tick)
				if got.TBF != p {
					t.Errorf("%s tbf = %v, want %v", dir, got.TBF, p)
				}
			}
			check("ingress", c.Ingress, tt.ingress)
			check("egress", c.Egress, tt.egress)
			if tt.ingressSource != "" && c.Ingress.From != tt.ingressSource {
				t.Errorf("ingress from %s, want %s", c.Ingress.From, tt.ingressSource)
			}
			if c.Name != "net1" {
				t.Errorf("name %q", c.Name)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		body string
		code uint
		msg  string
	}{
		{`,"ingressRate":8000`, 7, `bandwidth: field "ingressBurst": must be set when "ingressRate" is set`},
		{`,"ingressBurst":8000`, 7, `bandwidth: field "ingressRate": must be set when "ingressBurst" is set`},
		{`,"egressRate":8000,"egressBurst":0`, 7, `field "egressBurst": must be set when "egressRate" is set`},
		{`,"egressRate":0,"egressBurst":10`, 7, `field "egressRate": must be set when "egressBurst" is set`},
		{`,"runtimeConfig":{"bandwidth":{"egressRate":8000}}`, 7, `field "runtimeConfig.bandwidth.egressBurst": must be set`},
		{`,"ingressRate":8000,"ingressBurst":34359738360`, 7, `field "ingressBurst": 34359738360 bits: burst cannot be more than 4GB`},
		{`,"egressRate":4,"egressBurst":800`, 7, `field "egressRate": 4 is below the minimum 8 bits per second`},
		{`,"egressRate":800,"egressBurst":4`, 7, `field "egressBurst": 4 is below the minimum 8 bits`},
		{`,"ingressRate":-1,"ingressBurst":8`, 6, `field "ingressRate": expected an integer`},
		{`,"ingressRate":"10M","ingressBurst":8`, 6, `field "ingressRate"`},
	} {
		_, err := parseConfig(conf(tt.body), tick)
		var te *types.Error
		if !errors.As(err, &te) {
			t.Errorf("%s: error %v is not a CNI error", tt.body, err)
			continue
		}
		if te.Code != tt.code || !strings.Contains(te.Msg, tt.msg) {
			t.Errorf("%s: got code %d %q, want code %d containing %q", tt.body, te.Code, te.Msg, tt.code, tt.msg)
		}
	}
}

func TestIfbNames(t *testing.T) {
	p, a := ifbNames("net1", "c1", "eth0")
	// The reference plugin's name: "bwp" + sha512("net1"+"c1") hex, 15 chars.
	sum := sha512.Sum512([]byte("net1c1"))
	if want := "bwp" + hex.EncodeToString(sum[:6]); p != want {
		t.Errorf("primary %q", p)
	}
	if p2, _ := ifbNames("net1", "c1", "eth1"); p2 != p {
		t.Errorf("primary depends on ifname: %q vs %q", p, p2)
	}
	if _, a2 := ifbNames("net1", "c1", "eth1"); a2 == a || a == p {
		t.Errorf("alternate names not distinct: %q %q %q", p, a, a2)
	}
	if p3, _ := ifbNames("net2", "c1", "eth0"); p3 == p {
		t.Errorf("primary ignores network")
	}
}

func TestAlias(t *testing.T) {
	a := aliasFor("net1", "c1", "eth0")
	if a != "podnet-bandwidth net=net1 cid=c1 if=eth0" {
		t.Errorf("alias %q", a)
	}
	if !aliasNetwork(a, "net1") || aliasNetwork(a, "net") || aliasNetwork("bwp", "net1") {
		t.Error("aliasNetwork")
	}
	long := aliasFor(strings.Repeat("n", 200), strings.Repeat("c", 200), "eth0")
	if len(long) > aliasMax || !aliasNetwork(long, strings.Repeat("n", 200)) {
		t.Errorf("long alias %q", long)
	}
	if long == aliasFor(strings.Repeat("n", 200), strings.Repeat("c", 200), "eth1") {
		t.Error("long aliases collide")
	}
}

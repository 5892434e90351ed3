package tap

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"tap","multiQueue":true,"mtu":1400,"owner":1000,"group":100,"mac":"0a:00:00:00:00:01","runtimeConfig":{"mac":"0a:00:00:00:00:03"}}`), "MAC=0a:00:00:00:00:02")
	if err != nil {
		t.Fatal(err)
	}
	if !c.MultiQueue || c.MTU != 1400 || *c.Owner != 1000 || *c.Group != 100 || c.MAC.String() != "0a:00:00:00:00:03" {
		t.Errorf("%+v", c)
	}
	c, err = Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"tap"}`), "")
	if err != nil || c.Owner != nil || c.Group != nil || c.MAC != nil || c.IPAM.Type != "" {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		fields, env string
		code        uint
		want        string
	}{
		{`,"mtu":70000`, "", 7, `"mtu"`},
		{`,"owner":4294967295`, "", 7, `"owner"`},
		{`,"group":4294967295`, "", 7, `"group"`},
		{`,"owner":-1`, "", 6, "owner"},
		{`,"selinuxContext":"system_u:system_r:svirt_t:s0"`, "", 2, `"selinuxContext"`},
		{`,"mac":"zz"`, "", 7, `"mac"`},
		{``, "MAC=01:00:00:00:00:01", 4, "CNI_ARGS"},
		{`,"multiQueue":"yes"`, "", 6, "multiQueue"},
	} {
		_, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"tap"`+tc.fields+`}`), tc.env)
		te, ok := err.(*types.Error)
		if !ok || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) || !strings.HasPrefix(te.Msg, "tap: ") {
			b, _ := json.Marshal(err)
			t.Errorf("%s %s: %s, want code %d naming %s", tc.fields, tc.env, b, tc.code, tc.want)
		}
	}
}

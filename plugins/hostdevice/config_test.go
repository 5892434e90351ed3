package hostdevice

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"host-device","device":"eth1"}`))
	if err != nil || c.Device != "eth1" || c.MAC != nil {
		t.Errorf("%+v %v", c, err)
	}
	c, err = Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"host-device","hwaddr":"0A:58:00:00:00:01"}`))
	if err != nil || c.MAC.String() != "0a:58:00:00:00:01" {
		t.Errorf("%+v %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		fields string
		code   uint
		want   string
	}{
		{``, 7, `"device"`},
		{`,"device":"../x"`, 7, `"device"`},
		{`,"hwaddr":"nope"`, 7, `"hwaddr"`},
		{`,"pciBusID":"0000:00:19.0"`, 2, `"pciBusID"`},
		{`,"kernelpath":"/sys/devices/pci0000:00/0000:00:19.0"`, 2, `"kernelpath"`},
		{`,"device":"eth1","runtimeConfig":{"deviceID":"0000:00:19.0"}`, 2, `"runtimeConfig.deviceID"`},
		{`,"device":1`, 6, "device"},
	} {
		_, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"host-device"` + tc.fields + `}`))
		te, ok := err.(*types.Error)
		if !ok || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) || !strings.HasPrefix(te.Msg, "host-device: ") {
			b, _ := json.Marshal(err)
			t.Errorf("%s: %s, want code %d naming %s", tc.fields, b, tc.code, tc.want)
		}
	}
}

package macvlan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
)

// TestRootDelWithRefusedConfig (docs/del.md): ADD refuses each config and
// DEL of it succeeds; a macvlan ADD made with a good config and DEL'd with
// a refused one is gone from the pod, and its reservation released.
func TestRootDelWithRefusedConfig(t *testing.T) {
	l := newLAN(t)
	e := l.e
	good := l.conf("mvd", false, `"master":"up0"`)
	for i, tc := range []struct{ name, fields, env, field string }{
		{"bogus mode", `"master":"up0","mode":"bogus"`, "", `"mode"`},
		{"master name too long", `"master":"abcdefghijklmnop"`, "", `"master"`},
		{"mtu too big", `"master":"up0","mtu":70000`, "", `"mtu"`},
		{"bad CNI_ARGS MAC", `"master":"up0"`, "MAC=zz", "CNI_ARGS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := l.conf("mvd", false, tc.fields)
			pod := e.DelAfterRefused(t, nxtest.Refused{Bad: bad, Env: tc.env, Field: tc.field}, good, fmt.Sprintf("ctr-%d", i), "eth0")
			if ls := links(t, pod); strings.Contains(strings.Join(ls, ","), "eth0") {
				t.Errorf("eth0 left in the pod: %v", ls)
			}
			if r := e.Reservations("mvd"); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
		})
	}
}

package tuning

import "testing"

// TestDelDecodes: every config ParseConfig (ADD, CHECK) refuses with a
// value error, parseBase (DEL, GC) accepts (docs/del.md): DEL restores
// from the state ADD saved and needs only the name and dataDir.
func TestDelDecodes(t *testing.T) {
	for _, tc := range []struct{ name, conf, env string }{
		{"outside net", `{"sysctl":{"kernel.pid_max":"100"}}`, ""},
		{"dup literal", `{"sysctl":{"net.core.somaxconn":"1","net.core.somaxconn":"2"}}`, ""},
		{"dup in args", `{"args":{"cni":{"sysctl":{"net.core.somaxconn":"1","net/core/somaxconn":"2"}}}}`, ""},
		{"value newline", `{"sysctl":{"net.core.somaxconn":"1\n2"}}`, ""},
		{"bad mac", `{"mac":"zz:00:00:00:00:01"}`, ""},
		{"bad env mac", `{}`, "MAC=nope"},
		{"unknown env arg", `{}`, "FOO=bar"},
		{"negative mtu", `{"mtu":-1}`, ""},
		{"huge mtu", `{"mtu":70000}`, ""},
		{"negative txqlen", `{"txQLen":-1}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(tc.conf), "eth0", tc.env); err == nil {
				t.Fatal("ParseConfig accepted it")
			}
			if _, err := parseBase([]byte(tc.conf)); err != nil {
				t.Fatalf("parseBase: %v", err)
			}
		})
	}
	// What DEL needs to find the state is still checked.
	wantErr(t, func() error { _, err := parseBase([]byte(`{"name":"../x"}`)); return err }(), 7, `field "name"`)
	wantErr(t, func() error { _, err := parseBase([]byte(`{"dataDir":"rel"}`)); return err }(), 7, `field "dataDir"`)
}

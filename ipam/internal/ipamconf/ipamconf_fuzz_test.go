package ipamconf

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzCNIArgs: CNI_ARGS parsing and the address helpers it feeds never
// panic; keys and values come back trimmed, list items non-empty, and an
// address that parses re-parses to itself.
func FuzzCNIArgs(f *testing.F) {
	for _, a := range fuzzcheck.CNIArgs {
		f.Add(a)
	}
	f.Add("IP=::ffff:1.2.3.4/104,1.2.3.4/33,fe80::1%eth0")
	f.Fuzz(func(t *testing.T, s string) {
		m := CNIArgs(s)
		for k, v := range m {
			if k == "" || k != strings.TrimSpace(k) || v != strings.TrimSpace(v) {
				t.Fatalf("untrimmed %q=%q", k, v)
			}
			for _, item := range SplitList(v) {
				if item == "" || item != strings.TrimSpace(item) {
					t.Fatalf("bad list item %q", item)
				}
				if a, bits, err := ParseAddrOrPrefix(item); err == nil {
					if !a.IsValid() || a.Is4In6() || bits > a.BitLen() || bits < -1 {
						t.Fatalf("%q -> %v /%d", item, a, bits)
					}
					if b, _, err := ParseAddrOrPrefix(a.String()); err != nil || b != a {
						t.Fatalf("%q: %s does not re-parse: %v", item, a, err)
					}
				}
				if p, err := ParseCIDR(item); err == nil {
					if p.Addr().Is4In6() || !p.IsValid() {
						t.Fatalf("%q -> %v", item, p)
					}
					if q, err := ParseCIDR(p.String()); err != nil || q != p {
						t.Fatalf("%q: %s does not re-parse: %v", item, p, err)
					}
				}
				if a, err := ParseAddr(item); err == nil && (a.Zone() != "" || a.Is4In6()) {
					t.Fatalf("%q -> %v", item, a)
				}
			}
		}
	})
}

// FuzzParseRoutes: any routes list gives a spec-coded error naming the
// entry, or routes that marshal and re-parse.
func FuzzParseRoutes(f *testing.F) {
	for _, s := range []string{`[{"dst":"0.0.0.0/0"}]`, `[{"dst":"::/0","gw":"fd00::1","mtu":1400,"advmss":1300,"priority":5,"table":100,"scope":253}]`,
		`[{"dst":"10.0.0.0/8","gw":"10.0.0.1"},{"dst":""}]`, `[{"gw":"1.2.3.4"}]`, `[{"dst":"10.0.0.0/8","gw":"fd00::1"}]`, `[1]`, `[{"dst":5}]`, `[null]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var raw []json.RawMessage
		if json.Unmarshal(b, &raw) != nil {
			return
		}
		rts, err := ParseRoutes("fz", "routes", raw)
		if err != nil {
			if te := fuzzcheck.Err(t, "fz", err); !strings.Contains(te.Msg, "routes[") {
				t.Fatalf("error does not name the entry: %s", te.Msg)
			}
			return
		}
		out, err := json.Marshal(rts)
		if err != nil {
			t.Fatal(err)
		}
		var again []json.RawMessage
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRoutes("fz", "routes", again); err != nil {
			t.Fatalf("routes %s do not re-validate: %v", out, err)
		}
	})
}

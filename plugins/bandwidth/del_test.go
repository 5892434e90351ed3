package bandwidth

import "testing"

// TestDelDecodes: every config ADD refuses with a value error, DEL's and
// GC's decode accepts (docs/del.md): they find the attachment's ifb by its
// name and alias and need only the network name.
func TestDelDecodes(t *testing.T) {
	for _, body := range []string{
		`,"ingressRate":8000`,
		`,"egressRate":4,"egressBurst":800`,
		`,"ingressRate":8000,"ingressBurst":34359738360`,
		`,"runtimeConfig":{"bandwidth":{"egressRate":8000}}`,
	} {
		if _, err := parseConfig(conf(body), 1); err == nil {
			t.Errorf("parseConfig accepted %s", body)
		}
		if c, err := decode(conf(body)); err != nil || c.Name != "net1" {
			t.Errorf("decode(%s): %v", body, err)
		}
	}
}

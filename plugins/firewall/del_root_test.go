package firewall

import (
	"strings"
	"testing"
)

// TestRootDelWithRefusedConfig (docs/del.md): an ingressPolicy ADD refuses
// does not stop DEL from removing the attachment's elements (ADD made them
// with a good config); backend "ipfw" is accepted, as in the reference.
func TestRootDelWithRefusedConfig(t *testing.T) {
	l := newLab(t)
	p := l.pod("ctr-a", "fwd", "br0", "10.41.0.0/24", "fd41::/64")
	l.fwAdd(p, `"ingressPolicy":"isolated"`)
	if len(l.elements()) == 0 {
		t.Fatal("ADD made no elements")
	}
	bad := l.args(p, l.fwConf(p, `"ingressPolicy":"closed"`))
	if err := l.verb(Plugin.Check, bad); err == nil || !strings.Contains(err.Error(), `"ingressPolicy"`) {
		t.Fatalf("CHECK: %v", err)
	}
	for n := 1; n <= 2; n++ {
		if err := l.verb(Plugin.Del, bad); err != nil {
			t.Fatalf("DEL #%d with a refused ingressPolicy: %v", n, err)
		}
	}
	l.wantElements(0)

	l.fwAdd(p, `"backend":"ipfw"`)
	if len(l.elements()) == 0 {
		t.Fatal("ADD with backend ipfw made no elements")
	}
	if err := l.verb(Plugin.Del, l.args(p, l.fwConf(p, `"backend":"ipfw"`))); err != nil {
		t.Fatal(err)
	}
	l.wantElements(0)
}

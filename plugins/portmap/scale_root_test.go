package portmap

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/podnet/podnet/internal/roottest"
)

// TestRootManyElements: thousands of attachments' elements (a dump of
// many netlink messages) are read back completely, and one attachment's
// ADD and DEL touch only its own.
func TestRootManyElements(t *testing.T) {
	_, node := roottest.NewNS(t, "node")
	const n = 2000
	roottest.In(t, node, func() error {
		c := &Config{SNAT: true, MarkBit: DefaultMarkBit}
		var bulk []Elem
		for i := 0; i < n-1; i++ {
			c.Mappings = []Mapping{{HostPort: uint16(20000 + i), ContainerPort: 80, Proto: protoTCP}}
			pod := net.IPv4(10, 40, byte(i/250), byte(1+i%250)).To4()
			bulk = append(bulk, Desired(c, pod, nil, fmt.Sprintf("podnet:test:eth0:ctr-%d", i))...)
		}
		for i := 0; i < len(bulk); i += 500 {
			if err := applyAdd(bulk[i:min(i+500, len(bulk))], "podnet:test:bulk", c.Mark()); err != nil {
				return err
			}
		}
		c.Mappings = []Mapping{{HostPort: 19999, ContainerPort: 80, Proto: protoUDP}}
		last := "podnet:test:eth0:ctr-last"
		t0 := time.Now()
		if err := applyAdd(Desired(c, net.IPv4(10, 41, 0, 1).To4(), nil, last), last, c.Mark()); err != nil {
			return err
		}
		t.Logf("ADD with %d elements in the table: %v", len(bulk), time.Since(t0))
		es, err := ListElems()
		if err != nil {
			return err
		}
		if len(es) != len(bulk)+2 {
			t.Errorf("read back %d elements, want %d", len(es), len(bulk)+2)
		}
		t0 = time.Now()
		k, err := applyDel(func(o string) bool { return o == last })
		if err != nil {
			return err
		}
		t.Logf("DEL with %d elements in the table: %v", len(bulk), time.Since(t0))
		if k != 2 {
			t.Errorf("DEL removed %d elements, want 2", k)
		}
		es, err = ListElems()
		if err != nil {
			return err
		}
		if len(es) != len(bulk) {
			t.Errorf("%d elements after DEL, want %d", len(es), len(bulk))
		}
		// GC of all but one attachment: more deletions than one batch.
		t0 = time.Now()
		keep := "podnet:test:eth0:ctr-7"
		if k, err = applyDel(func(o string) bool { return o != keep }); err != nil {
			return err
		}
		t.Logf("GC of %d elements: %v", k, time.Since(t0))
		if es, err = ListElems(); err != nil {
			return err
		}
		if len(es) != 2 || es[0].Owner != keep {
			t.Errorf("after GC: %v", es)
		}
		return nil
	})
}

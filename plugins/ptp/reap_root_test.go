package ptp

import (
	"fmt"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
)

func TestMain(m *testing.M) { nxtest.RunWithReaper(m) }

// assertDetached checks that the host veth is still there, marked, down,
// and that no main-table route goes through it.
func assertDetached(t *testing.T, e *nxtest.Env, hostVeth string) {
	t.Helper()
	l := nxtest.AssertDetached(t, e.Node, hostVeth)
	e.In(e.Node, func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range rs {
			t.Errorf("route through detached %s: %s", hostVeth, r)
		}
		return nil
	})
}

// ptpConf gives out exactly two addresses per family: .2/.3 and ::2/::3.
func ptpConf(e *nxtest.Env, network string, n int) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"ptp","ipMasq":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[
			[{"subnet":"10.%d.0.0/24","rangeStart":"10.%d.0.2","rangeEnd":"10.%d.0.3"}],
			[{"subnet":"fd%d::/64","rangeStart":"fd%d::2","rangeEnd":"fd%d::3"}]]}}`,
		network, e.DataDir, n, n, n, n, n, n))
}

func TestRootDelReapsInBackground(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := ptpConf(e, "ptpr", 71)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	args := e.Args(nxtest.WithPrev(t, c, r), "ctr", pod, "eth0")
	t0 := time.Now()
	if err := e.Del(args); err != nil {
		t.Fatal(err)
	}
	t.Logf("DEL took %v", time.Since(t0))
	if res := e.Reservations("ptpr"); len(res) != 0 {
		t.Errorf("reservations left after DEL: %v", res)
	}
	if left := nxtest.WaitGone(t, e.Node, 2*time.Second, r.Interfaces[0].Name); len(left) != 0 {
		t.Errorf("not reaped within 2 s: %v", left)
	}
	if nxtest.Link(t, pod, "eth0") != nil {
		t.Error("pod interface left")
	}
	if err := e.Del(args); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

// While the old attachment waits for its reaper, a new pod gets the same
// IPv4 and IPv6 addresses and is reachable from the node and another pod.
func TestRootSameIPDuringReapWindow(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := ptpConf(e, "ptpw", 72)
	other, podA, podB := e.Pod(), e.Pod(), e.Pod()
	e.MustAdd(e.Args(c, "ctr-c", other, "eth0"))
	ra := e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	// Pod A is pinged from the node only: routed, the node's neighbour
	// entry is per host veth, so the new pod cannot inherit it.
	for _, ipc := range ra.IPs {
		if err := nxtest.Ping(e.Node, ipc.Address.IP); err != nil {
			t.Fatalf("ping pod A %s: %v", ipc.Address.IP, err)
		}
	}
	nxtest.ReaperMode(t, "1500ms")
	if err := e.Del(e.Args(c, "ctr-a", podA, "eth0")); err != nil {
		t.Fatal(err)
	}
	assertDetached(t, e, ra.Interfaces[0].Name)
	rb := e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))
	for i := range ra.IPs {
		if !rb.IPs[i].Address.IP.Equal(ra.IPs[i].Address.IP) {
			t.Fatalf("pod B got %s, want A's %s", rb.IPs[i].Address.IP, ra.IPs[i].Address.IP)
		}
	}
	assertDetached(t, e, ra.Interfaces[0].Name) // still in the window
	for _, ipc := range rb.IPs {
		for _, from := range []string{e.Node, other} {
			if err := nxtest.Ping(from, ipc.Address.IP); err != nil {
				t.Errorf("ping %s (pod B) from %s during the reap window: %v", ipc.Address.IP, from, err)
			}
		}
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, rb), "ctr-b", podB, "eth0")); err != nil {
		t.Errorf("CHECK pod B: %v", err)
	}
	if left := nxtest.WaitGone(t, e.Node, 4*time.Second, ra.Interfaces[0].Name); len(left) != 0 {
		t.Errorf("not reaped: %v", left)
	}
	// The reap took nothing of B's with it.
	for _, ipc := range rb.IPs {
		if err := nxtest.Ping(other, ipc.Address.IP); err != nil {
			t.Errorf("ping %s after the reap: %v", ipc.Address.IP, err)
		}
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, rb), "ctr-b", podB, "eth0")); err != nil {
		t.Errorf("CHECK pod B after the reap: %v", err)
	}
}

// Re-ADD into the same netns right after DEL removes the detached
// interface and works.
func TestRootReAddSameNetns(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := ptpConf(e, "ptpra", 73)
	pod := e.Pod()
	r1 := e.MustAdd(e.Args(c, "ctr-1", pod, "eth0"))
	nxtest.ReaperMode(t, "5s")
	if err := e.Del(e.Args(c, "ctr-1", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
	assertDetached(t, e, r1.Interfaces[0].Name)
	r2 := e.MustAdd(e.Args(c, "ctr-2", pod, "eth0"))
	if nxtest.Link(t, e.Node, r1.Interfaces[0].Name) != nil {
		t.Errorf("old host veth %s still there after re-ADD", r1.Interfaces[0].Name)
	}
	for _, ipc := range r2.IPs {
		if err := nxtest.Ping(e.Node, ipc.Address.IP); err != nil {
			t.Errorf("ping %s after re-ADD: %v", ipc.Address.IP, err)
		}
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r2), "ctr-2", pod, "eth0")); err != nil {
		t.Errorf("CHECK after re-ADD: %v", err)
	}
}

// GC deletes marked links that no reaper removed; unmarked ones stay.
func TestRootGCSweepsMarked(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := ptpConf(e, "ptpgc", 74)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	e.In(e.Node, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}, PeerName: "keep0p"})
	})
	nxtest.ReaperMode(t, "none")
	if err := e.Del(e.Args(c, "ctr", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	assertDetached(t, e, r.Interfaces[0].Name)
	if err := e.GC(e.Args(c, "", "", "")); err != nil {
		t.Fatal(err)
	}
	if nxtest.Link(t, e.Node, r.Interfaces[0].Name) != nil {
		t.Error("marked host veth left after GC")
	}
	if nxtest.Link(t, e.Node, "keep0") == nil {
		t.Error("unmarked keep0 deleted by GC")
	}
}

// ADDs racing DELs of one container ID: no panic (ptp shares
// netlinkx.CreateVethPair with bridge), and DEL plus GC leave nothing.
func TestRootAddDelRaceSameContainer(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "ptprace", "10.68.0.0/24", "", "")
	e.RaceAddDel(c, "ptprace", 5, 20)
}

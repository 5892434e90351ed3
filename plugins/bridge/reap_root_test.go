package bridge

import (
	"fmt"
	"github.com/containernetworking/cni/pkg/skel"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
)

func TestMain(m *testing.M) { nxtest.RunWithReaper(m) }

func assertDetached(t *testing.T, e *nxtest.Env, hostVeth string) {
	t.Helper()
	nxtest.AssertDetached(t, e.Node, hostVeth)
}

// DEL returns before the veth is deleted; the reaper deletes it shortly
// after. IPAM is released at once; a second DEL is fine.
func TestRootDelReapsInBackground(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netr", "10.61.0.0/24", "", `"isGateway":true,"ipMasq":true,"macspoofchk":true`)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	hostVeth := r.Interfaces[1].Name
	args := e.Args(nxtest.WithPrev(t, c, r), "ctr", pod, "eth0")
	t0 := time.Now()
	if err := e.Del(args); err != nil {
		t.Fatal(err)
	}
	t.Logf("DEL took %v", time.Since(t0))
	if res := e.Reservations("netr"); len(res) != 0 {
		t.Errorf("reservation left after DEL: %v", res)
	}
	if left := nxtest.WaitGone(t, e.Node, 2*time.Second, hostVeth); len(left) != 0 {
		t.Errorf("not reaped within 2 s: %v", left)
	}
	t.Logf("reaped %v after DEL started", time.Since(t0))
	if nxtest.Link(t, pod, "eth0") != nil {
		t.Error("pod interface left")
	}
	if err := e.Del(args); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	e.In(e.Node, func() error {
		assertRules(t, MasqChain, 0)
		assertRules(t, SpoofChain, 0)
		return nil
	})
}

// One reaper per node namespace at a time: a DEL while a reaper is at work
// starts none, and the reaper at work also deletes what was marked after
// it started.
func TestRootReapersCoalesce(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netc", "10.66.0.0/24", "", `"isGateway":true`)
	var hosts []string
	var dels []*skel.CmdArgs
	for _, id := range []string{"c1", "c2", "c3"} {
		pod := e.Pod()
		r := e.MustAdd(e.Args(c, id, pod, "eth0"))
		hosts = append(hosts, r.Interfaces[1].Name)
		dels = append(dels, e.Args(nxtest.WithPrev(t, c, r), id, pod, "eth0"))
	}
	nxtest.ReaperMode(t, "1s") // the first DEL's reaper holds the name, then reaps
	t0 := time.Now()
	if err := e.Del(dels[0]); err != nil {
		t.Fatal(err)
	}
	// A reaper started now would reap at once; there must be none.
	nxtest.ReaperMode(t, "now")
	for _, a := range dels[1:] {
		if err := e.Del(a); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if time.Since(t0) < 900*time.Millisecond {
		for _, h := range hosts {
			assertDetached(t, e, h)
		}
	}
	if left := nxtest.WaitGone(t, e.Node, 5*time.Second, hosts...); len(left) != 0 {
		t.Errorf("not reaped: %v", left)
	}
	if d := time.Since(t0); d < time.Second {
		t.Errorf("reaped after %v: a second reaper ran", d)
	}
}

// While the old attachment waits for its reaper, a new pod gets the same
// address (the range has only one) and works: from the node and from
// another pod.
func TestRootSameIPDuringReapWindow(t *testing.T) {
	e := nxtest.New(t, Plugin)
	// Two addresses, .2 and .3: ctr-c takes one, A and then B the other.
	c := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"netw","type":"bridge","bridge":"br0",
		"isGateway":true,"ipMasq":true,"macspoofchk":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.62.0.0/24","rangeStart":"10.62.0.2","rangeEnd":"10.62.0.3"}]]}}`, e.DataDir))
	other := e.Pod()
	rc := e.MustAdd(e.Args(c, "ctr-c", other, "eth0"))
	podA, podB := e.Pod(), e.Pod()
	ra := e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	ip := ra.IPs[0].Address.IP
	// Pod A is not pinged: the node and the other pod would cache its MAC
	// for the address, and the gratuitous ARP of B's interface coming up
	// is sent before its bridge port forwards, so it cannot correct them
	// (true with or without the reaper; see docs/plugins/bridge.md).
	nxtest.ReaperMode(t, "1500ms")
	if err := e.Del(e.Args(c, "ctr-a", podA, "eth0")); err != nil {
		t.Fatal(err)
	}
	assertDetached(t, e, ra.Interfaces[1].Name)
	rb := e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))
	if !rb.IPs[0].Address.IP.Equal(ip) {
		t.Fatalf("pod B got %s, want A's %s (range %s)", rb.IPs[0].Address.IP, ip, rc.IPs[0].Address.IP)
	}
	assertDetached(t, e, ra.Interfaces[1].Name) // still in the window
	for _, from := range []string{e.Node, other} {
		if err := nxtest.Ping(from, ip); err != nil {
			t.Errorf("ping %s (pod B) from %s during the reap window: %v", ip, from, err)
		}
	}
	if left := nxtest.WaitGone(t, e.Node, 4*time.Second, ra.Interfaces[1].Name); len(left) != 0 {
		t.Errorf("not reaped: %v", left)
	}
	if err := nxtest.Ping(other, ip); err != nil {
		t.Errorf("ping pod B after the reap: %v", err)
	}
}

// A runtime that re-ADDs into the same netns right after DEL: the detached
// interface is still there, ADD removes it and succeeds.
func TestRootReAddSameNetns(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netra", "10.63.0.0/24", "fd63::/64", `"isGateway":true,"ipMasq":true`)
	pod := e.Pod()
	r1 := e.MustAdd(e.Args(c, "ctr-1", pod, "eth0"))
	nxtest.ReaperMode(t, "5s")
	if err := e.Del(e.Args(c, "ctr-1", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
	assertDetached(t, e, r1.Interfaces[1].Name)
	r2 := e.MustAdd(e.Args(c, "ctr-2", pod, "eth0"))
	if nxtest.Link(t, e.Node, r1.Interfaces[1].Name) != nil {
		t.Errorf("old host veth %s still there after re-ADD", r1.Interfaces[1].Name)
	}
	for _, ipc := range r2.IPs {
		if err := nxtest.Ping(e.Node, ipc.Address.IP); err != nil {
			t.Errorf("ping %s after re-ADD: %v", ipc.Address.IP, err)
		}
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r2), "ctr-2", pod, "eth0")); err != nil {
		t.Errorf("CHECK after re-ADD: %v", err)
	}
	// A pod interface that is not a detached attachment still fails ADD.
	if _, err := e.Add(e.Args(c, "ctr-3", pod, "eth0")); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("ADD over a live eth0: %v", err)
	}
}

// A reaper that died leaves a marked veth: the next DEL's reaper sweeps it,
// and so does GC (synchronously).
func TestRootLeftoversSwept(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netk", "10.64.0.0/24", "", `"isGateway":true`)
	markedVeth := func(name string) {
		t.Helper()
		e.In(e.Node, func() error {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			return netlink.LinkSetAlias(l, netlinkx.ReapMarker+" test")
		})
	}
	e.In(e.Node, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}, PeerName: "keep0p"})
	})
	markedVeth("dead0")
	podA, podB := e.Pod(), e.Pod()
	ra := e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	rb := e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))

	nxtest.ReaperMode(t, "none")
	if err := e.Del(e.Args(c, "ctr-a", podA, "eth0")); err != nil {
		t.Fatal(err)
	}
	// The reaper that gives up must be gone (on a loaded machine its
	// start alone can take longer than the next DEL): while it holds the
	// reaper name, the next DEL leaves its link to it.
	nxtest.WaitNoReaper(t, e.Node)
	assertDetached(t, e, ra.Interfaces[1].Name)

	nxtest.ReaperMode(t, "now")
	if err := e.Del(e.Args(c, "ctr-b", podB, "eth0")); err != nil {
		t.Fatal(err)
	}
	if left := nxtest.WaitGone(t, e.Node, 2*time.Second, ra.Interfaces[1].Name, rb.Interfaces[1].Name, "dead0", "dead0p"); len(left) != 0 {
		t.Errorf("not swept by the next reaper: %v", left)
	}

	// GC sweeps synchronously. The last reaper must be gone first: one that
	// is still at work (its final look) would sweep ctr-c's link, which
	// this part needs left to GC.
	nxtest.ReaperMode(t, "none")
	nxtest.WaitNoReaper(t, e.Node)
	podC := e.Pod()
	rc := e.MustAdd(e.Args(c, "ctr-c", podC, "eth0"))
	if err := e.Del(e.Args(c, "ctr-c", podC, "eth0")); err != nil {
		t.Fatal(err)
	}
	markedVeth("dead1")
	assertDetached(t, e, rc.Interfaces[1].Name)
	if err := e.GC(e.Args(c, "", "", "")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{rc.Interfaces[1].Name, "dead1"} {
		if nxtest.Link(t, e.Node, n) != nil {
			t.Errorf("%s left after GC", n)
		}
	}
	for _, n := range []string{"keep0", "keep0p", "br0"} {
		if nxtest.Link(t, e.Node, n) == nil {
			t.Errorf("unmarked %s deleted", n)
		}
	}
}

// DEL with the pod netns already gone: nothing to detach, IPAM released.
func TestRootDelAfterNetnsGone(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netg", "10.65.0.0/24", "", `"isGateway":true,"ipMasq":true`)
	pod := e.Pod()
	e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	if err := netns.DeletePath(pod); err != nil {
		t.Fatal(err)
	}
	if err := e.Del(e.Args(c, "ctr", pod, "eth0")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if r := e.Reservations("netg"); len(r) != 0 {
		t.Errorf("reservations %v", r)
	}
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
}

// ADDs racing DELs of one container ID (a runtime retrying while it tears
// the sandbox down): a DEL that finds the pod's veth before the ADD made it
// a bridge port deletes it, and the ADD then fails. It must fail cleanly:
// it used to panic in netlinkx.CreateVethPair (a "return nil, nil, err"
// nilled the named result its deferred cleanup removed), killing the
// plugin before its rollback. DEL and GC afterwards leave nothing.
func TestRootAddDelRaceSameContainer(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netrace", "10.67.0.0/24", "", `"isGateway":true`)
	e.RaceAddDel(c, "netrace", 5, 20)
}

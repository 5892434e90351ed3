package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

// The real binary: a bridge DEL returns, and the reaper it started (the
// binary again, hidden command reap-links) deletes the host veth; the
// reaper run by hand deletes marked links only.
func TestRootReaperBinary(t *testing.T) {
	roottest.Require(t)
	_, node := roottest.NewNS(t, "cmdnode")
	_, pod := roottest.NewNS(t, "cmdpod")
	conf := sprintf(`{"cniVersion":"1.1.0","name":"reapnet","type":"bridge","bridge":"br0","isGateway":true,"ipMasq":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.66.0.0/24"}]]}}`, t.TempDir())
	inNode := func(fn func() error) {
		t.Helper()
		if err := netns.Do(node, fn); err != nil {
			t.Fatal(err)
		}
	}
	var o cniOut
	inNode(func() error { o = runPlugin(t, "bridge", "ADD", conf, "CNI_NETNS="+pod); return nil })
	if o.err != nil {
		t.Fatalf("ADD: %v %s", o.err, o.stdout)
	}
	var res current.Result
	if err := json.Unmarshal(o.stdout, &res); err != nil || len(res.Interfaces) != 3 {
		t.Fatalf("ADD result %s: %v", o.stdout, err)
	}
	hostVeth := res.Interfaces[1].Name
	inNode(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}, PeerName: "keep0p"}); err != nil {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dead0"}, PeerName: "dead0p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("dead0")
		if err != nil {
			return err
		}
		return netlink.LinkSetAlias(l, netlinkx.ReapMarker)
	})
	t0 := time.Now()
	inNode(func() error { o = runPlugin(t, "bridge", "DEL", conf, "CNI_NETNS="+pod); return nil })
	if o.err != nil {
		t.Fatalf("DEL: %v %s", o.err, o.stdout)
	}
	t.Logf("DEL (exec) took %v", time.Since(t0))
	gone := func(name string) bool {
		var err error
		inNode(func() error { _, err = netlink.LinkByName(name); return nil })
		return netlinkx.IsNotFound(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !(gone(hostVeth) && gone("dead0")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !gone(hostVeth) || !gone("dead0") {
		t.Errorf("reaper left %s (gone %v) / dead0 (gone %v)", hostVeth, gone(hostVeth), gone("dead0"))
	}
	t.Logf("reaped %v after DEL started", time.Since(t0))

	// By hand: only marked links go.
	inNode(func() error {
		l, err := netlink.LinkByName("keep0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetAlias(l, "podnet-rea"); err != nil {
			return err
		}
		c := exec.Command(filepath.Join(binDir, "podnet"), reapCmd, "-v")
		c.Args[0] = "podnet-reaper"
		out, err := c.CombinedOutput()
		if err != nil || string(out) != "reaped 0 links\n" {
			t.Errorf("reap-links: %v %q", err, out)
		}
		return nil
	})
	if gone("keep0") {
		t.Error("unmarked keep0 reaped")
	}
}

package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/roottest"
)

// Detach marks and downs the host end and keeps it; the reaper deletes
// marked links only; an ADD-time reap removes a marked pod interface and
// refuses an unmarked one.
func TestRootDetachAndReap(t *testing.T) {
	_, nodePath := roottest.NewNS(t, "nlx-rnode")
	_, podPath := roottest.NewNS(t, "nlx-rpod")
	podNS, err := netns.GetFromPath(podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	roottest.In(t, nodePath, func() error {
		h, err := NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		ph, err := NewHandleAt(podNS)
		if err != nil {
			return err
		}
		defer ph.Close()
		br, _, err := EnsureBridge(h, Bridge{Name: "br7"})
		if err != nil {
			return err
		}
		host, _, err := CreateVethPair(h, ph, Veth{PodName: "eth0", PodNS: podNS, MasterIndex: br.Index})
		if err != nil {
			return err
		}
		// Unmarked links of all kinds, one with a look-alike alias.
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0", TxQLen: -1}, PeerName: "keep0-peer"}); err != nil {
			return fmt.Errorf("add keep0: %w", err)
		}
		keep0, _ := h.LinkByName("keep0")
		if err := h.LinkSetAlias(keep0, "podnet-rea"); err != nil {
			return fmt.Errorf("alias: %w", err)
		}

		// The wrong bridge: not ours, nothing changed.
		if _, err := DetachPodLink(h, Detach{Path: podPath, IfName: "eth0", Bridge: "nobr"}); !errors.Is(err, ErrNotOurs) {
			t.Errorf("detach with the wrong bridge: %v", err)
		}
		if _, err := DetachPodLink(h, Detach{Path: podPath, IfName: "eth0"}); !errors.Is(err, ErrNotOurs) {
			t.Errorf("detach of a bridge port as ptp: %v", err)
		}
		// An unmarked pod interface is not reaped at ADD.
		if reaped, err := ReapPodLinkIfMarked(h, ph, "eth0"); reaped || err != nil {
			t.Errorf("reap unmarked: %v %v", reaped, err)
		}
		idx, err := DetachPodLink(h, Detach{Path: podPath, IfName: "eth0", Bridge: "br7", Info: ReapInfo("n", "ctr", "eth0")})
		if err != nil || idx != host.Index {
			t.Fatalf("detach: %d %v", idx, err)
		}
		l, err := h.LinkByIndex(idx)
		if err != nil {
			t.Fatal(err)
		}
		if !Marked(l) || l.Attrs().Flags&net.FlagUp != 0 || !strings.Contains(l.Attrs().Alias, "id=ctr") {
			t.Errorf("detached host end: alias %q flags %v", l.Attrs().Alias, l.Attrs().Flags)
		}
		if _, err := ph.LinkByName("eth0"); err != nil {
			t.Errorf("pod end gone at detach: %v", err)
		}
		// Gone namespace or interface: nothing to do.
		if idx, err := DetachPodLink(h, Detach{Path: "/nonexistent", IfName: "eth0"}); idx != 0 || err != nil {
			t.Errorf("gone netns: %d %v", idx, err)
		}
		if idx, err := DetachPodLink(h, Detach{Path: podPath, IfName: "eth9"}); idx != 0 || err != nil {
			t.Errorf("no interface: %d %v", idx, err)
		}

		// A marked veth nobody reaped (a killed reaper), plus this one.
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dead0", TxQLen: -1}, PeerName: "dead0-peer"}); err != nil {
			return fmt.Errorf("add dead0: %w", err)
		}
		dead0, _ := h.LinkByName("dead0")
		if err := MarkForReap(h, dead0, ""); err != nil {
			return fmt.Errorf("mark dead0: %w", err)
		}
		n, err := ReapMarked(h, idx)
		if err != nil || n != 2 {
			t.Errorf("reaped %d: %v", n, err)
		}
		for _, name := range []string{host.Name, "dead0", "dead0-peer"} {
			if _, err := h.LinkByName(name); !IsNotFound(err) {
				t.Errorf("%s still there: %v", name, err)
			}
		}
		if _, err := ph.LinkByName("eth0"); !IsNotFound(err) {
			t.Errorf("pod end still there: %v", err)
		}
		for _, name := range []string{"keep0", "br7", "lo"} {
			if _, err := h.LinkByName(name); err != nil {
				t.Errorf("unmarked %s deleted: %v", name, err)
			}
		}
		if n, err := ReapMarked(h, idx); n != 0 || err != nil {
			t.Errorf("second reap: %d %v", n, err)
		}

		// ADD finds a detached pod interface: reaped synchronously.
		host, _, err = CreateVethPair(h, ph, Veth{PodName: "eth0", PodNS: podNS})
		if err != nil {
			return err
		}
		if _, err := DetachPodLink(h, Detach{Path: podPath, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
		if reaped, err := ReapPodLinkIfMarked(h, ph, "eth0"); !reaped || err != nil {
			t.Errorf("reap marked at ADD: %v %v", reaped, err)
		}
		if _, err := h.LinkByIndex(host.Index); !IsNotFound(err) {
			t.Errorf("host end still there: %v", err)
		}
		return nil
	})
}

// Without a registered reaper, StartReleasePodLink deletes the pair itself.
func TestRootReleaseWithoutReaper(t *testing.T) {
	_, nodePath := roottest.NewNS(t, "nlx-snode")
	_, podPath := roottest.NewNS(t, "nlx-spod")
	podNS, err := netns.GetFromPath(podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	SetReaper()
	roottest.In(t, nodePath, func() error {
		h, err := NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		ph, err := NewHandleAt(podNS)
		if err != nil {
			return err
		}
		defer ph.Close()
		host, _, err := CreateVethPair(h, ph, Veth{PodName: "eth0", PodNS: podNS})
		if err != nil {
			return err
		}
		if err := StartReleasePodLink(Detach{Path: podPath, IfName: "eth0"})(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.LinkByIndex(host.Index); !IsNotFound(err) {
			t.Errorf("host end still there: %v", err)
		}
		return nil
	})
}

package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/roottest"
	"github.com/podnet/podnet/ipam/hostlocal"
)

// floorSteps times the steps of one phase (add, del, reap) of each
// benchmark iteration; it reports the median of each step as a metric
// "<phase>-<step>-med-µs".
type floorSteps struct {
	phase string
	names []string
	durs  map[string][]time.Duration
}

func (f *floorSteps) time(name string, fn func() error) error {
	t := time.Now()
	err := fn()
	d := time.Since(t)
	if f.durs == nil {
		f.durs = map[string][]time.Duration{}
	}
	if _, ok := f.durs[name]; !ok {
		f.names = append(f.names, name)
	}
	f.durs[name] = append(f.durs[name], d)
	return err
}

func medianMicros(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return float64(m.Nanoseconds()) / 1e3
}

func (f *floorSteps) report(b *testing.B) {
	for _, n := range f.names {
		b.ReportMetric(medianMicros(f.durs[n]), f.phase+"-"+n+"-med-µs")
	}
}

// BenchmarkKernelFloor is the in-process kernel floor of a bridge
// (isGateway, ipMasq) + host-local ADD and its DEL: the same kernel and
// file operations, through the same internal functions, in one long-lived
// process (no exec, no config parsing, no result printing), on a warm
// bridge in a node namespace the benchmark makes. Each iteration:
//
//	ADD: open the pod netns and two netlink handles; look the bridge up;
//	     create the veth pair (pod end straight into the pod netns), host
//	     end accept_ra=0, attach to the bridge, read the pod end back;
//	     host-local reservation (lock, read, temp file + link, cursor,
//	     unlock); pod sysctls (netns switch), address, link up, default
//	     route; gateway address check; ip_forward check; nftables
//	     masquerade batch; wait for the host veth to be oper up.
//	DEL: what the plugin's DEL waits for: detach (look up the pod end and
//	     its peer, alias + down), nftables remove, host-local release.
//	reap: the reaper's deletion of the host veth (off the DEL's path in
//	     the plugin, reported apart).
//
// ns/op is the whole iteration (mean); add-med-µs, del-med-µs, reap-med-µs
// and one metric per step (medians) break it down. It reports, never
// asserts, times.
func BenchmarkKernelFloor(b *testing.B) {
	roottest.Require(b)
	_, nodePath := roottest.NewNS(b, "flnode")
	_, podPath := roottest.NewNS(b, "flpod")
	dataDir := b.TempDir()

	// The whole benchmark runs on one thread inside the node namespace,
	// as a plugin process does (sysctls and nftables use the thread's
	// namespace).
	runtime.LockOSThread()
	orig, err := vns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	defer orig.Close()
	nodeNS, err := vns.GetFromPath(nodePath)
	if err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	defer nodeNS.Close()
	if err := vns.Set(nodeNS); err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	defer func() {
		if err := vns.Set(orig); err != nil {
			b.Errorf("restore netns: %v (thread left locked)", err)
			return
		}
		runtime.UnlockOSThread()
	}()

	const brName, ifName, network = "flbr0", "eth0", "floor"
	pod := netip.MustParseAddr("10.77.0.2")
	gw := net.IPNet{IP: net.ParseIP("10.77.0.1").To4(), Mask: net.CIDRMask(16, 32)}
	podNet := net.IPNet{IP: pod.AsSlice(), Mask: net.CIDRMask(16, 32)}
	storeDir := dataDir + "/" + network

	// Warm: the bridge and its gateway address exist, ip_forward is on,
	// the nftables table and chain exist (as after a node's first pod).
	{
		h, err := netlinkx.NewHandle()
		if err != nil {
			b.Fatal(err)
		}
		br, _, err := netlinkx.EnsureBridge(h, netlinkx.Bridge{Name: brName})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := netlinkx.EnsureGatewayAddr(h, br, gw, nil, false); err != nil {
			b.Fatal(err)
		}
		h.Close()
		if err := netlinkx.EnableForwarding(true, false); err != nil {
			b.Fatal(err)
		}
		if err := nft.Apply(MasqChain, "warm", nil); err != nil {
			b.Fatal(err)
		}
	}

	add, del, reap := floorSteps{phase: "add"}, floorSteps{phase: "del"}, floorSteps{phase: "reap"}
	var addT, delT, reapT []time.Duration
	fail := func(i int, what string, err error) {
		b.Fatalf("iteration %d: %s: %v", i, what, err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("floor-%d", i)
		tag := nft.Tag(network, id, ifName)
		owner := hostlocal.Owner{ContainerID: id, IfName: ifName}
		t0 := time.Now()

		// ADD
		var podNS vns.NsHandle
		var node, podH *netlink.Handle
		var br *netlink.Bridge
		var hostVeth *netlink.Veth
		var podLink netlink.Link
		if err := add.time("open-ns+handles", func() (err error) {
			var gone bool
			if podNS, gone, err = netlinkx.OpenNS(podPath); err != nil || gone {
				return fmt.Errorf("open %s: gone %v, %v", podPath, gone, err)
			}
			if node, err = netlinkx.NewHandle(); err != nil {
				return err
			}
			podH, err = netlinkx.NewHandleAt(podNS)
			return err
		}); err != nil {
			fail(i, "open", err)
		}
		if err := add.time("bridge-lookup", func() (err error) {
			br, _, err = netlinkx.EnsureBridge(node, netlinkx.Bridge{Name: brName})
			return err
		}); err != nil {
			fail(i, "bridge", err)
		}
		if err := add.time("veth", func() (err error) {
			hostVeth, podLink, err = netlinkx.CreateVethPair(node, podH, netlinkx.Veth{PodName: ifName, PodNS: podNS, MasterIndex: br.Index})
			return err
		}); err != nil {
			fail(i, "veth", err)
		}
		if err := add.time("hostlocal", func() error {
			s, err := hostlocal.OpenStore(storeDir, true)
			if err != nil {
				return err
			}
			if _, err := s.Entries(); err != nil {
				s.Close()
				return err
			}
			_ = s.LastReserved(0)
			if ok, err := s.Reserve(pod, owner); err != nil || !ok {
				s.Close()
				if err == nil {
					err = errors.New("address taken")
				}
				return err
			}
			if err := s.SetLastReserved(0, pod); err != nil {
				s.Close()
				return err
			}
			return s.Close()
		}); err != nil {
			fail(i, "host-local", err)
		}
		if err := add.time("pod-configure", func() error {
			_, def, _ := net.ParseCIDR("0.0.0.0/0")
			r := netlinkx.RouteFromCNI(&types.Route{Dst: *def}, podLink.Attrs().Index, gw.IP)
			return netlinkx.ConfigurePod(podH, podNS, netlinkx.PodIface{
				Link: podLink, Addrs: []net.IPNet{podNet}, Routes: []*netlink.Route{r}, ARPNotify: true, NoDADSysctl: true,
			})
		}); err != nil {
			fail(i, "configure pod", err)
		}
		if err := add.time("gateway-addr", func() error {
			_, err := netlinkx.EnsureGatewayAddr(node, br, gw, []net.IPNet{gw}, false)
			return err
		}); err != nil {
			fail(i, "gateway", err)
		}
		if err := add.time("ip_forward", func() error { return netlinkx.EnableForwarding(true, false) }); err != nil {
			fail(i, "forwarding", err)
		}
		if err := add.time("nft-masq", func() error {
			rules, err := nft.MasqRules([]net.IPNet{podNet})
			if err != nil {
				return err
			}
			return nft.Apply(MasqChain, tag, rules)
		}); err != nil {
			fail(i, "masquerade", err)
		}
		if err := add.time("oper-up", func() error {
			_, err := netlinkx.WaitOperUp(node, hostVeth.Index, portUpTimeout)
			return err
		}); err != nil {
			fail(i, "oper up", err)
		}
		_ = add.time("close", func() error {
			podH.Close()
			node.Close()
			return podNS.Close()
		})
		t1 := time.Now()

		// DEL
		var idx int
		if err := del.time("detach", func() error {
			h, err := netlinkx.NewHandle()
			if err != nil {
				return err
			}
			defer h.Close()
			idx, err = netlinkx.DetachPodLink(h, netlinkx.Detach{Path: podPath, IfName: ifName, Bridge: brName, Info: netlinkx.ReapInfo(network, id, ifName)})
			return err
		}); err != nil || idx == 0 {
			fail(i, "detach", err)
		}
		if err := del.time("nft-remove", func() error { _, err := nft.Remove(MasqChain, tag); return err }); err != nil {
			fail(i, "nft remove", err)
		}
		if err := del.time("hostlocal", func() error {
			s, err := hostlocal.OpenStore(storeDir, false)
			if err != nil {
				return err
			}
			if _, err := s.ReleaseOwner(owner); err != nil {
				s.Close()
				return err
			}
			return s.Close()
		}); err != nil {
			fail(i, "host-local release", err)
		}
		t2 := time.Now()

		// The reaper's part.
		if err := reap.time("veth-delete", func() error {
			h, err := netlinkx.NewHandle()
			if err != nil {
				return err
			}
			defer h.Close()
			_, err = netlinkx.DelLinkByIndex(h, idx)
			return err
		}); err != nil {
			fail(i, "reap", err)
		}
		addT = append(addT, t1.Sub(t0))
		delT = append(delT, t2.Sub(t1))
		reapT = append(reapT, time.Since(t2))
	}
	b.StopTimer()
	b.ReportMetric(medianMicros(addT), "add-med-µs")
	b.ReportMetric(medianMicros(delT), "del-med-µs")
	b.ReportMetric(medianMicros(reapT), "reap-med-µs")
	for _, s := range []*floorSteps{&add, &del, &reap} {
		s.report(b)
	}
}

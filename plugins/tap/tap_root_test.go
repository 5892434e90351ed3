package tap

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

func tapLink(t *testing.T, pod, ifName string) *netlink.Tuntap {
	t.Helper()
	var tt *netlink.Tuntap
	roottest.In(t, pod, func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		var ok bool
		if tt, ok = l.(*netlink.Tuntap); !ok {
			return fmt.Errorf("%s is a %s", ifName, l.Type())
		}
		return nil
	})
	return tt
}

// attach opens the tap as a VM would (without the virtio-net header, so
// frames are plain Ethernet) and returns the queue's descriptor.
func attach(t *testing.T, pod, ifName string) int {
	t.Helper()
	fd := -1
	roottest.In(t, pod, func() error {
		var err error
		if fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(ifName)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	})
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// readARP waits up to d for an ARP request on the tap queue fd and returns
// its sender and target protocol addresses.
func readARP(fd int, d time.Duration) (sender, target net.IP, err error) {
	deadline := time.Now().Add(d)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			return nil, nil, err
		}
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		f := buf[:n]
		// Ethernet (14) + ARP for IPv4 over Ethernet (28), op 1 = request.
		if n >= 42 && binary.BigEndian.Uint16(f[12:14]) == 0x0806 && binary.BigEndian.Uint16(f[20:22]) == 1 {
			return net.IP(f[28:32]), net.IP(f[38:42]), nil
		}
	}
	return nil, nil, fmt.Errorf("no ARP request within %v", d)
}

// TestRootTap: the tap is made as configured, carries the pod's traffic to
// whoever attaches to it, passes CHECK, and DEL removes it and frees the
// address.
func TestRootTap(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := e.Conf("1.1.0", "tap1", `"type":"tap","mtu":1400,"owner":1000,"group":1001,"runtimeConfig":{"mac":"0a:58:0a:58:00:07"}`,
		`"routes":[{"dst":"0.0.0.0/0"}]`, "10.88.0.0/24")
	pod := e.Pod()
	args := e.Args(c, "ctr-a", pod, "eth0")
	r := e.MustAdd(args)
	if len(r.Interfaces) != 1 || r.Interfaces[0].Sandbox != pod || r.Interfaces[0].Mac != "0a:58:0a:58:00:07" || len(r.IPs) != 1 || *r.IPs[0].Interface != 0 {
		t.Fatalf("result: %+v", r)
	}
	tt := tapLink(t, pod, "eth0")
	if tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Owner != 1000 || tt.Group != 1001 || tt.NonPersist || tt.MTU != 1400 ||
		tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tt.HardwareAddr.String() != "0a:58:0a:58:00:07" {
		t.Errorf("tap: mode %v owner %d group %d nonpersist %v mtu %d flags %v mac %s", tt.Mode, tt.Owner, tt.Group, tt.NonPersist, tt.MTU, tt.Flags, tt.HardwareAddr)
	}

	if got := strings.Join(tunIDAttrs(t, pod, tt.Attrs().Index), ","); got != "owner=1000,group=1001" {
		t.Errorf("owner/group attributes %q", got)
	}

	// A VM attaches; the pod's traffic to its subnet reaches it as frames.
	fd := attach(t, pod, "eth0")
	roottest.In(t, pod, func() error {
		conn, err := net.Dial("udp4", "10.88.0.77:9")
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("hello"))
		return err
	})
	sender, target, err := readARP(fd, 5*time.Second)
	if err != nil {
		t.Fatalf("frames on the tap: %v", err)
	}
	if !sender.Equal(r.IPs[0].Address.IP) || !target.Equal(net.ParseIP("10.88.0.77")) {
		t.Errorf("ARP who-has %s tell %s; want who-has 10.88.0.77 tell %s", target, sender, r.IPs[0].Address.IP)
	}

	chk := e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "eth0")
	if err := e.Check(chk); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	other := e.Conf("1.1.0", "tap1", `"type":"tap","owner":1002`, `"routes":[{"dst":"0.0.0.0/0"}]`, "10.88.0.0/24")
	if err := e.Check(e.Args(nxtest.WithPrev(t, other, r), "ctr-a", pod, "eth0")); err == nil || !strings.Contains(err.Error(), "owner is 1000, config says 1002") {
		t.Errorf("CHECK with another owner: %v", err)
	}
	mq := e.Conf("1.1.0", "tap1", `"type":"tap","multiQueue":true`, `"routes":[{"dst":"0.0.0.0/0"}]`, "10.88.0.0/24")
	if err := e.Check(e.Args(nxtest.WithPrev(t, mq, r), "ctr-a", pod, "eth0")); err == nil || !strings.Contains(err.Error(), "multi-queue is false") {
		t.Errorf("CHECK with multiQueue: %v", err)
	}

	for i := 0; i < 2; i++ {
		if err := e.Del(args); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if nxtest.Link(t, pod, "eth0") != nil {
		t.Error("tap left after DEL")
	}
	if got := e.Reservations("tap1"); len(got) != 0 {
		t.Errorf("reservations after DEL: %v", got)
	}
}

// TestRootTapMultiQueueL2: multiQueue, no owner or group (left unset, as
// `ip tuntap` leaves them), no IPAM (up, no address).
func TestRootTapMultiQueueL2(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := []byte(`{"cniVersion":"1.0.0","name":"tap2","type":"tap","multiQueue":true}`)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr-a", pod, "tap0"))
	if len(r.IPs) != 0 {
		t.Errorf("L2 result has IPs: %+v", r.IPs)
	}
	tt := tapLink(t, pod, "tap0")
	if tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || tt.Flags&netlink.TUNTAP_VNET_HDR != 0 || tt.Flags&netlink.TUNTAP_NO_PI == 0 {
		t.Errorf("tap: flags %v", tt.Flags)
	}
	// The kernel reports no owner and group at all when they are unset; the
	// netlink library would show that as 0 (root), so read the attributes.
	if got := tunIDAttrs(t, pod, tt.Attrs().Index); len(got) != 0 {
		t.Errorf("tap0 has owner/group attributes %v; want none", got)
	}
	if tt.Attrs().RawFlags&unix.IFF_UP == 0 {
		t.Errorf("tap0 is not up")
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "tap0")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.Del(e.Args(c, "ctr-a", pod, "tap0")); err != nil {
		t.Fatal(err)
	}
}

// TestRootTapFailedAdd: a taken CNI_IFNAME is code 4 and leaves the other
// interface and no reservation; DEL with the namespace gone frees the
// address.
func TestRootTapFailedAdd(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := e.Conf("1.1.0", "tap3", `"type":"tap"`, "", "10.89.0.0/24")
	pod := e.Pod()
	r1 := e.MustAdd(e.Args(c, "ctr-1", pod, "eth0"))
	_, err := e.Add(e.Args(c, "ctr-2", pod, "eth0"))
	if te, ok := err.(*types.Error); !ok || te.Code != 4 || !strings.Contains(te.Msg, "CNI_IFNAME") {
		t.Errorf("second eth0: %v", err)
	}
	var names []string
	roottest.In(t, pod, func() error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if len(names) != 2 {
		t.Errorf("pod after the failed ADD: %v", names)
	}
	if got := e.Reservations("tap3"); len(got) != 1 || got[0] != r1.IPs[0].Address.IP.String() {
		t.Errorf("reservations after the failed ADD: %v", got)
	}
	if err := netns.DeletePath(pod); err != nil {
		t.Fatal(err)
	}
	if err := e.Del(e.Args(c, "ctr-1", pod, "eth0")); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if got := e.Reservations("tap3"); len(got) != 0 {
		t.Errorf("reservations after DEL: %v", got)
	}
}

// tunIDAttrs returns which of IFLA_TUN_OWNER and IFLA_TUN_GROUP link index
// in the pod reports.
func tunIDAttrs(t *testing.T, pod string, index int) []string {
	t.Helper()
	var got []string
	roottest.In(t, pod, func() error {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(index)
		req.AddData(msg)
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if err != nil {
			return err
		}
		if len(msgs) != 1 {
			return fmt.Errorf("%d answers", len(msgs))
		}
		attrs, err := nl.ParseRouteAttr(msgs[0][unix.SizeofIfInfomsg:])
		if err != nil {
			return err
		}
		for _, a := range attrs {
			if a.Attr.Type != unix.IFLA_LINKINFO {
				continue
			}
			info, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return err
			}
			for _, i := range info {
				if i.Attr.Type != nl.IFLA_INFO_DATA {
					continue
				}
				data, err := nl.ParseRouteAttr(i.Value)
				if err != nil {
					return err
				}
				for _, d := range data {
					switch d.Attr.Type {
					case nl.IFLA_TUN_OWNER:
						got = append(got, fmt.Sprintf("owner=%d", binary.LittleEndian.Uint32(d.Value)))
					case nl.IFLA_TUN_GROUP:
						got = append(got, fmt.Sprintf("group=%d", binary.LittleEndian.Uint32(d.Value)))
					}
				}
				return nil
			}
		}
		return fmt.Errorf("no IFLA_INFO_DATA for link %d", index)
	})
	return got
}

// TestRootTapBridge (issue 18): with "bridge", the tap becomes a port of
// that bridge in the pod's namespace, as with the reference; CHECK verifies
// it; a missing bridge is code 7 naming the field and leaves no tap.
func TestRootTapBridge(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := []byte(`{"cniVersion":"1.0.0","name":"tapb","type":"tap","bridge":"vmbr"}`)
	pod := e.Pod()
	_, err := e.Add(e.Args(c, "ctr-a", pod, "tap0"))
	if te, ok := err.(*types.Error); !ok || te.Code != 7 || !strings.Contains(te.Msg, `"bridge"`) {
		t.Fatalf("ADD without the bridge: %v, want code 7 naming \"bridge\"", err)
	}
	e.In(pod, func() error {
		if ls, _ := netlink.LinkList(); len(ls) != 1 {
			t.Errorf("links left after the refused ADD: %d", len(ls))
		}
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "vmbr"}})
	})
	r := e.MustAdd(e.Args(c, "ctr-a", pod, "tap0"))
	tt := tapLink(t, pod, "tap0")
	e.In(pod, func() error {
		br, err := netlink.LinkByName("vmbr")
		if err != nil || tt.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("tap0 master %d, want vmbr (%v)", tt.Attrs().MasterIndex, err)
		}
		return nil
	})
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "tap0")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	e.In(pod, func() error {
		l, _ := netlink.LinkByName("tap0")
		return netlink.LinkSetNoMaster(l)
	})
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "tap0")); err == nil || !strings.Contains(err.Error(), "vmbr") {
		t.Errorf("CHECK of a detached tap: %v", err)
	}
	if err := e.Del(e.Args(c, "ctr-a", pod, "tap0")); err != nil {
		t.Fatal(err)
	}
}

// Package nxtest holds helpers for the root tests of podnet's L2/L3 plugins
// (bridge, ptp): run a plugin verb inside a "node" namespace the test made,
// ping between namespaces with ICMP sockets, list what is left in a
// namespace. It is imported by tests only and never touches the root
// namespace.
package nxtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

// Env is one test's node namespace and host-local data dir.
type Env struct {
	T       testing.TB
	Node    string // path of the node netns
	DataDir string
	Plugin  *cniplugin.Plugin
}

// New makes a node namespace and a data dir for the test.
func New(t testing.TB, p *cniplugin.Plugin) *Env {
	t.Helper()
	roottest.Require(t)
	_, node := roottest.NewNS(t, "node")
	return &Env{T: t, Node: node, DataDir: t.TempDir(), Plugin: p}
}

// Pod makes a pod namespace and returns its path.
func (e *Env) Pod() string {
	e.T.Helper()
	_, p := roottest.NewNS(e.T, "pod")
	return p
}

// Args builds the CNI arguments of one attachment.
func (e *Env) Args(conf []byte, containerID, podPath, ifName string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: containerID, Netns: podPath, IfName: ifName, StdinData: conf, Path: "/nonexistent"}
}

// Add runs ADD inside the node namespace, as a runtime would (through
// Plugin.CmdAdd; Del and Check likewise).
func (e *Env) Add(a *skel.CmdArgs) (*current.Result, error) {
	var res types.Result
	err := netns.Do(e.Node, func() error {
		var err error
		res, err = e.Plugin.CmdAdd(a)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// MustAdd is Add that fails the test on error.
func (e *Env) MustAdd(a *skel.CmdArgs) *current.Result {
	e.T.Helper()
	r, err := e.Add(a)
	if err != nil {
		e.T.Fatalf("ADD %s: %v", a.ContainerID, err)
	}
	return r
}

func (e *Env) run(f func(*skel.CmdArgs) error, a *skel.CmdArgs) error {
	if f == nil {
		return nil
	}
	return netns.Do(e.Node, func() error { return f(a) })
}

// Del, Check, GC and Status run the verb inside the node namespace.
// Conf is a plugin config of version ver and network name whose IPAM is
// host-local in e's data dir, with one range set per non-empty subnet;
// fields (e.g. `"type":"ptp","mtu":1400`) are spliced into the top level and
// ipamFields into "ipam".
func (e *Env) Conf(ver, network, fields, ipamFields string, subnets ...string) []byte {
	var sets []string
	for _, s := range subnets {
		if s != "" {
			sets = append(sets, fmt.Sprintf(`[{"subnet":%q}]`, s))
		}
	}
	if ipamFields != "" {
		ipamFields = "," + ipamFields
	}
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,%s,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[%s]%s}}`, ver, network, fields, e.DataDir, strings.Join(sets, ","), ipamFields))
}

// BenchAddDel times b.N in-process ADD+DEL pairs of conf in one pod
// namespace, after a warm-up ADD in another (so the bridge, tables and
// IPAM directory already exist): the plugin's own cost, without the
// process start a runtime adds.
func (e *Env) BenchAddDel(b *testing.B, conf []byte) {
	pod := e.Pod()
	e.MustAdd(e.Args(conf, "warm", e.Pod(), "eth0"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := e.Args(conf, fmt.Sprintf("c%d", i), pod, "eth0")
		if _, err := e.Add(a); err != nil {
			b.Fatal(err)
		}
		if err := e.Del(a); err != nil {
			b.Fatal(err)
		}
	}
}

func (e *Env) Del(a *skel.CmdArgs) error    { return e.run(e.Plugin.CmdDel, a) }
func (e *Env) Check(a *skel.CmdArgs) error  { return e.run(e.Plugin.CmdCheck, a) }
func (e *Env) GC(a *skel.CmdArgs) error     { return e.run(e.Plugin.GC, a) }
func (e *Env) Status(a *skel.CmdArgs) error { return e.run(e.Plugin.Status, a) }

// In runs fn inside the namespace at path.
func (e *Env) In(path string, fn func() error) {
	e.T.Helper()
	roottest.In(e.T, path, fn)
}

// Veths lists the names of the veth links in the namespace at path.
func (e *Env) Veths(path string) []string {
	e.T.Helper()
	var names []string
	e.In(path, func() error {
		ls, err := netlinkx.Retry(netlink.LinkList) // reapers delete links meanwhile
		if err != nil {
			return err
		}
		for _, l := range ls {
			if l.Type() == "veth" {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	sort.Strings(names)
	return names
}

// Reservations lists the host-local reservation files of network (the
// address files; lock and last-reserved bookkeeping excluded).
func (e *Env) Reservations(network string) []string {
	e.T.Helper()
	ents, err := os.ReadDir(filepath.Join(e.DataDir, network))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.T.Fatal(err)
	}
	var out []string
	for _, d := range ents {
		if net.ParseIP(d.Name()) != nil {
			out = append(out, d.Name())
		}
	}
	sort.Strings(out)
	return out
}

// WithPrev returns conf with prevResult set to res (for CHECK and DEL).
func WithPrev(t testing.TB, conf []byte, res *current.Result) []byte {
	t.Helper()
	s := strings.TrimSpace(string(conf))
	b, err := res.GetAsVersion(res.CNIVersion)
	if err != nil {
		t.Fatal(err)
	}
	j, err := marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s[:len(s)-1] + `,"prevResult":` + j + "}")
}

// Ping sends one ICMP echo from inside the namespace at path to dst and
// waits for the reply (raw ICMP socket; the tests run as root).
func Ping(path string, dst net.IP) error {
	var err error
	for try := 0; try < 3; try++ { // the first echo may be spent on ARP/ND
		if err = pingOnce(path, dst, try); err == nil {
			return nil
		}
	}
	return err
}

func pingOnce(path string, dst net.IP, seq int) error {
	var c *icmp.PacketConn
	v4 := dst.To4() != nil
	err := netns.Do(path, func() error {
		var err error
		if v4 {
			c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		} else {
			c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("icmp socket: %w", err)
	}
	defer c.Close()
	var typ, replyTyp icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if !v4 {
		typ, replyTyp, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("podnet")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst}); err != nil {
		return fmt.Errorf("ping %s: %w", dst, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s: no reply: %w", dst, err)
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != replyTyp {
			continue
		}
		if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst) {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
			return nil
		}
	}
}

// WaitVeths polls Veths until there are n of them or 3 s pass (namespace
// teardown, which removes veths, runs asynchronously in the kernel).
func (e *Env) WaitVeths(path string, n int) []string {
	e.T.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		v := e.Veths(path)
		if len(v) == n || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// EtherTypeTest is the IEEE local experimental EtherType used by SendFrame.
const EtherTypeTest = 0x88b5

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// SendFrame sends one broadcast Ethernet frame with source MAC src and
// payload out of ifName in the namespace at path (AF_PACKET socket).
func SendFrame(path, ifName string, src net.HardwareAddr, payload []byte) error {
	return netns.Do(path, func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(EtherTypeTest)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		frame := make([]byte, 0, 14+len(payload))
		frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		frame = append(frame, src...)
		frame = append(frame, byte(EtherTypeTest>>8), byte(EtherTypeTest&0xff))
		frame = append(frame, payload...)
		for len(frame) < 60 {
			frame = append(frame, 0)
		}
		sa := &unix.SockaddrLinklayer{Protocol: htons(EtherTypeTest), Ifindex: l.Attrs().Index, Halen: 6}
		copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		return unix.Sendto(fd, frame, 0, sa)
	})
}

// FrameListener receives EtherTypeTest frames on an interface.
type FrameListener struct{ fd int }

// ListenFrames opens an AF_PACKET socket on ifName in the namespace at path.
func ListenFrames(path, ifName string) (*FrameListener, error) {
	var fl *FrameListener
	err := netns.Do(path, func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(EtherTypeTest)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(EtherTypeTest), Ifindex: l.Attrs().Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((300 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		fl = &FrameListener{fd: fd}
		return nil
	})
	return fl, err
}

// Payloads returns the payload prefixes (len n) of the frames received
// until a 300 ms silence.
func (f *FrameListener) Payloads(n int) []string {
	var out []string
	buf := make([]byte, 2048)
	for {
		m, _, err := unix.Recvfrom(f.fd, buf, 0)
		if err != nil {
			return out
		}
		if m >= 14+n {
			out = append(out, string(buf[14:14+n]))
		}
	}
}

// Close closes the socket.
func (f *FrameListener) Close() { unix.Close(f.fd) }

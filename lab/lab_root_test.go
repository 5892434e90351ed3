package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/overlay"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/roottest"
)

// binDir holds podnet and podnet-agent built for these tests (root only).
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "podnet-lab-bin-")
			if err != nil {
				panic(err)
			}
			defer os.RemoveAll(dir)
			for name, pkg := range map[string]string{"podnet": "../cmd/podnet", "podnet-agent": "../cmd/podnet-agent"} {
				if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
					os.Stderr.Write(out)
					panic(err)
				}
			}
			binDir = dir
		}
		return m.Run()
	}()
	os.Exit(code)
}

var seq atomic.Int32

// upLab brings up a lab with a unique name and removes it when the test
// ends, asserting nothing is left behind.
func upLab(t *testing.T, backend string, nodes, pods int) *Lab {
	t.Helper()
	return upLabWith(t, Options{Nodes: nodes, PodsPerNode: pods, Backend: backend})
}

// upLabWith is upLab with more options (Name, binaries and Out are set
// here).
func upLabWith(t *testing.T, o Options) *Lab {
	t.Helper()
	roottest.Require(t)
	name := fmt.Sprintf("t%d%d", os.Getpid()%100000, seq.Add(1))
	var out strings.Builder
	o.Name, o.Out = name, &out
	o.AgentBin, o.PodnetBin = filepath.Join(binDir, "podnet-agent"), filepath.Join(binDir, "podnet")
	l, err := Up(context.Background(), o)
	t.Cleanup(func() {
		if err := Down("", name, nil); err != nil {
			t.Errorf("down: %v", err)
		}
		assertGone(t, name, l)
	})
	if err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	return l
}

// assertGone checks that no namespace, process or directory of lab name
// remains.
func assertGone(t *testing.T, name string, l *Lab) {
	t.Helper()
	ents, _ := os.ReadDir(netns.RunDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), nsPrefix(name)) {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
	if _, err := os.Stat(Dir("", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind (%v)", Dir("", name), err)
	}
	if ps := findProcs(Dir("", name)); len(ps) > 0 {
		t.Errorf("processes left behind: %v", ps)
	}
	if l != nil {
		for _, n := range l.Nodes {
			if n.AgentPID > 0 && alive(n.AgentPID) {
				t.Errorf("agent %s (pid %d) still running", n.Name, n.AgentPID)
			}
		}
		if alive(l.Etcd.PID) {
			t.Errorf("etcd supervisor pid %d still running", l.Etcd.PID)
		}
	}
}

func check(t *testing.T, l *Lab) *Report {
	t.Helper()
	var out strings.Builder
	r, err := l.Check(&out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func podIP(t *testing.T, l *Lab, pod string) net.IP {
	t.Helper()
	p := l.Pod(pod)
	if p == nil || !p.IPv4().IsValid() {
		t.Fatalf("no pod %s with an address", pod)
	}
	return p.IPv4().AsSlice()
}

// bigDF sends a UDP datagram making a 1400-byte IP packet with DF set from
// pod a to pod b's echo server and waits for the echo.
func bigDF(t *testing.T, l *Lab, a, b string) {
	t.Helper()
	bl, err := probe.Listen(NetnsPath(l.Pod(b).Netns), net.JoinHostPort(l.Pod(b).IPv4().String(), "7701"))
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	var conn *net.UDPConn
	if err := netns.Do(NetnsPath(l.Pod(a).Netns), func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: podIP(t, l, b), Port: 7701})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, _ := conn.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	})
	if serr != nil {
		t.Fatal(serr)
	}
	payload := []byte(strings.Repeat("x", 1400-20-8))
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("send 1400-byte DF: %v", err)
	}
	buf := make([]byte, 2000)
	n, err := conn.Read(buf)
	if err != nil || n < len(payload) {
		t.Fatalf("1400-byte DF packet %s -> %s: no full echo (%d bytes): %v", a, b, n, err)
	}
}

// stream is a TCP connection between two pods with an echo server, for
// checking that a long-lived flow survives agent restarts.
type stream struct {
	ln   net.Listener
	conn net.Conn
	r    *bufio.Reader
	n    int
}

func openStream(t *testing.T, l *Lab, from, to string) *stream {
	t.Helper()
	s := &stream{}
	addr := net.JoinHostPort(l.Pod(to).IPv4().String(), "7702")
	if err := netns.Do(NetnsPath(l.Pod(to).Netns), func() (err error) { s.ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	if err := netns.Do(NetnsPath(l.Pod(from).Netns), func() (err error) { s.conn, err = net.DialTimeout("tcp", addr, 3*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	s.r = bufio.NewReader(s.conn)
	t.Cleanup(func() { s.conn.Close(); s.ln.Close() })
	return s
}

// exchange sends a numbered line and expects it back.
func (s *stream) exchange(t *testing.T, what string) {
	t.Helper()
	s.n++
	msg := fmt.Sprintf("line %d\n", s.n)
	s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.conn.Write([]byte(msg)); err != nil {
		t.Fatalf("%s: stream write: %v", what, err)
	}
	got, err := s.r.ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("%s: stream read %q, %v (want %q)", what, got, err, msg)
	}
}

func routesIn(t *testing.T, ns string) map[string]netlink.Route {
	t.Helper()
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]netlink.Route{}
	for _, r := range rs {
		out[r.Dst.String()] = r
	}
	return out
}

func TestLabVXLAN(t *testing.T) {
	t.Parallel()
	l := upLab(t, VXLAN, 2, 2)
	if l.Node("n1").Segment == l.Node("n2").Segment {
		t.Fatal("vxlan lab nodes on one segment: the underlay is not routed")
	}
	// All pairs pod<->pod, node<->pod, no NAT among them, pods seen as
	// their node outside the cluster.
	r := check(t, l)
	if len(r.Cells) != 30 || len(r.External) != 4 {
		t.Fatalf("matrix %d cells, %d external", len(r.Cells), len(r.External))
	}
	if c := r.Cells[[2]string{"n1-p1", "n2-p2"}]; c.SeenTCP != l.Pod("n1-p1").IPv4().String() {
		t.Fatalf("n1-p1 seen by n2-p2 as %s", c.SeenTCP)
	}
	for _, c := range r.External {
		if c.SeenTCP != l.Node(l.Pod(c.From).Node).IP.String() {
			t.Fatalf("%s -> external seen as %s, want its node", c.From, c.SeenTCP)
		}
	}
	bigDF(t, l, "n1-p1", "n2-p1")
	bigDF(t, l, "n2-p2", "n1-p2")

	// `podnet lab status -o json` through the CLI trampoline parses.
	out, err := exec.Command(filepath.Join(binDir, "podnet"), "lab", "status", "--name", l.Name, "-o", "json").Output()
	if err != nil {
		t.Fatalf("lab status: %v", err)
	}
	var st struct {
		Name  string `json:"name"`
		Nodes []struct {
			Name         string `json:"name"`
			AgentRunning bool   `json:"agentRunning"`
		} `json:"nodes"`
		Pods []Pod `json:"pods"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	if st.Name != l.Name || len(st.Nodes) != 2 || !st.Nodes[0].AgentRunning || len(st.Pods) != 4 || st.Pods[3].Node != "n2" || !st.Pods[3].IPv4().IsValid() {
		t.Fatalf("status: %s", out)
	}
	// `lab exec` runs inside the pod's namespace.
	out, err = exec.Command(filepath.Join(binDir, "podnet"), "lab", "exec", "--name", l.Name, "n2-p1", "--", "cat", "/proc/net/fib_trie").Output()
	if err != nil || !strings.Contains(string(out), l.Pod("n2-p1").IPv4().String()) {
		t.Fatalf("lab exec: %v\n%s", err, out)
	}

	// A TCP stream between pods on different nodes survives kill -9 and
	// restart of both agents.
	s := openStream(t, l, "n1-p1", "n2-p2")
	s.exchange(t, "before")
	for _, n := range []string{"n2", "n1"} {
		if err := l.StopAgent(n, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		s.exchange(t, "agent "+n+" killed")
		if err := l.StartAgent(n, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // a few syncs of the new agent
		s.exchange(t, "agent "+n+" restarted")
	}
	if _, err := probe.Ping(NetnsPath(l.Pod("n2-p1").Netns), podIP(t, l, "n1-p2"), 2*time.Second); err != nil {
		t.Fatalf("after restarts: %v", err)
	}

	// n2 leaves: its agent stops, its records go; n1 drops the route.
	n2sub := l.Node("n2").Subnets[0].String()
	if _, ok := routesIn(t, l.Node("n1").Netns)[n2sub]; !ok {
		t.Fatalf("n1 has no route to %s", n2sub)
	}
	if err := l.Leave(context.Background(), "n2"); err != nil {
		t.Fatal(err)
	}
	roottest.Eventually(t, 10*time.Second, "n1 drops the route to n2", func() error {
		if _, ok := routesIn(t, l.Node("n1").Netns)[n2sub]; ok {
			return errors.New("route to n2 still there")
		}
		return nil
	})
	if _, err := probe.Ping(NetnsPath(l.Pod("n1-p1").Netns), podIP(t, l, "n2-p1"), time.Second); err == nil {
		t.Fatal("n1-p1 still reaches n2-p1 after n2 left")
	}
}

func TestLabHostGW(t *testing.T) {
	t.Parallel()
	l := upLab(t, HostGW, 2, 2)
	check(t, l)
	rs := routesIn(t, l.Node("n1").Netns)
	if r := rs[l.Node("n2").Subnets[0].String()]; r.Gw.String() != l.Node("n2").IP.String() {
		t.Fatalf("host-gw route %v, want via %s", r, l.Node("n2").IP)
	}
	// `lab bench` measures each path it names (rates, not ratios, are
	// asserted: speed is the benchmark's business, not a test's).
	var out strings.Builder
	res, err := l.Bench(context.Background(), 1, 1, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	var whats []string
	for _, r := range res {
		whats = append(whats, r.What)
		if r.Gbps <= 0 || len(r.Runs) != 1 {
			t.Fatalf("%s: %v Gbit/s, runs %v", r.What, r.Gbps, r.Runs)
		}
		if r.Underlay != "" && r.Ratio <= 0 {
			t.Fatalf("%s: no ratio to %q", r.What, r.Underlay)
		}
	}
	if want := []string{"node->node underlay, one segment", "pod->pod same node", "pod->pod cross node, host-gw"}; !slices.Equal(whats, want) {
		t.Fatalf("bench measured %q, want %q", whats, want)
	}
	// down through the CLI, twice (idempotent).
	for range 2 {
		if out, err := exec.Command(filepath.Join(binDir, "podnet"), "lab", "down", "--name", l.Name).CombinedOutput(); err != nil {
			t.Fatalf("lab down: %v\n%s", err, out)
		}
	}
	assertGone(t, l.Name, l)
}

// TestLabDownAfterFailedUp: up fails halfway (the plugin binary is not
// podnet, so the first pod ADD fails) with etcd, an agent and namespaces
// running; down removes all of it.
func TestLabDownAfterFailedUp(t *testing.T) {
	t.Parallel()
	roottest.Require(t)
	name := fmt.Sprintf("f%d", os.Getpid()%100000)
	l, err := Up(context.Background(), Options{Name: name, Nodes: 1, PodsPerNode: 1,
		AgentBin: filepath.Join(binDir, "podnet-agent"), PodnetBin: "/bin/false"})
	if err == nil {
		Down("", name, nil)
		t.Fatal("up with a bogus plugin binary succeeded")
	}
	if l == nil || !alive(l.Etcd.PID) || !alive(l.Nodes[0].AgentPID) {
		t.Fatalf("expected a half-made lab, got %+v (%v)", l, err)
	}
	if _, err := Up(context.Background(), Options{Name: name, AgentBin: filepath.Join(binDir, "podnet-agent"), PodnetBin: "/bin/false"}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second up: %v", err)
	}
	// Lose lab.json too: down still finds everything by name.
	os.Remove(filepath.Join(l.Dir, StateFile))
	if err := Down("", name, nil); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name, l)
}

// TestLabEtcdOutage: etcd stopped for 30 s. Pods keep their connections
// and reach each other, a pod added meanwhile works (the plugin needs only
// the node's state file), a route deleted by hand is repaired from the
// agent's last view; when etcd is back the agents re-sync: their records
// are alive past the lease TTL and a node leaving afterwards is seen by all.
func TestLabEtcdOutage(t *testing.T) {
	t.Parallel()
	l := upLab(t, VXLAN, 3, 1)
	s := openStream(t, l, "n1-p1", "n2-p1")
	s.exchange(t, "before the outage")
	if err := l.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	down := func() error {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(l.Etcd.Endpoints[0], "http://"), time.Second)
		if err == nil {
			c.Close()
			return errors.New("etcd still accepts connections")
		}
		return nil
	}
	if err := down(); err != nil {
		t.Fatal(err)
	}

	// A pod added during the outage.
	n1 := l.Node("n1")
	p := &Pod{Name: "n1-late", Node: "n1", Netns: nsPrefix(l.Name) + "n1-late", ContainerID: "lab-" + l.Name + "-n1-late"}
	if err := newNS(p.Netns); err != nil {
		t.Fatal(err)
	}
	l.Pods = append(l.Pods, p)
	if err := l.Save(); err != nil {
		t.Fatal(err)
	}
	if err := l.addPod(context.Background(), n1, p); err != nil {
		t.Fatalf("pod ADD during the etcd outage: %v", err)
	}

	// Drift during the outage is repaired from the agent's last view.
	n2sub := l.Node("n2").Subnets[0].String()
	r, ok := routesIn(t, n1.Netns)[n2sub]
	if !ok {
		t.Fatalf("n1 has no route to n2 (%s)", n2sub)
	}
	h, err := handle(n1.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.RouteDel(&r); err != nil {
		t.Fatal(err)
	}
	roottest.Eventually(t, 10*time.Second, "route to n2 repaired while etcd is down", func() error {
		if _, ok := routesIn(t, n1.Netns)[n2sub]; !ok {
			return errors.New("still missing")
		}
		return nil
	})

	for i := 0; time.Since(stopped) < 30*time.Second; i++ {
		s.exchange(t, fmt.Sprintf("etcd down %s", time.Since(stopped).Round(time.Second)))
		for _, pair := range [][2]string{{"n1-p1", "n3-p1"}, {"n3-p1", "n2-p1"}, {"n1-late", "n2-p1"}, {"n2-p1", "n1-late"}} {
			if _, err := probe.Ping(NetnsPath(l.Pod(pair[0]).Netns), podIP(t, l, pair[1]), 2*time.Second); err != nil {
				t.Fatalf("etcd down %s: %s -> %s: %v", time.Since(stopped).Round(time.Second), pair[0], pair[1], err)
			}
		}
		time.Sleep(3 * time.Second)
	}
	if err := down(); err != nil { // nothing brought it back early
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		if !alive(n.AgentPID) {
			t.Fatalf("agent %s died during the outage", n.Name)
		}
	}

	if err := l.StartEtcd(); err != nil {
		t.Fatal(err)
	}
	// Past the agents' lease TTL (15 s) after the restart, every node's
	// record is still there: the agents renewed or re-leased, each keeping
	// its subnet.
	time.Sleep(20 * time.Second)
	st, err := etcd.New(context.Background(), etcd.Options{Endpoints: l.Etcd.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	infos := snap.Nodes
	if len(infos) != 3 {
		t.Fatalf("after the outage etcd has %d node records, want 3: %+v", len(infos), infos)
	}
	for _, in := range infos {
		if n := l.Node(in.Name); n == nil || !slices.Equal(in.Subnets, n.Subnets) {
			t.Fatalf("record %+v does not match the node's subnets", in)
		}
	}
	s.exchange(t, "etcd back")
	check(t, l)

	// The watch works again: n3 leaves, n1 and n2 drop its route.
	n3sub := l.Node("n3").Subnets[0].String()
	if err := l.Leave(context.Background(), "n3"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		roottest.Eventually(t, 10*time.Second, n+" drops the route to n3 after the outage", func() error {
			if _, ok := routesIn(t, l.Node(n).Netns)[n3sub]; ok {
				return errors.New("route to n3 still there")
			}
			return nil
		})
	}
}

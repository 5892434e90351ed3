package lab

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet/internal/probe"
)

// ProbePort is where Check's echo servers listen in every pod and node.
const ProbePort = 7700

// Target is one end of a probe: a pod or a node.
type Target struct {
	Name   string
	Netns  string // namespace name
	IP     netip.Addr
	Pod    bool
	Node   string // the node (itself for a node)
	NodeIP netip.Addr
}

// Cell is the outcome of ICMP, TCP and UDP from one target to another.
type Cell struct {
	From, To string
	ICMP     error
	TCP, UDP error
	SeenTCP  string // source address the receiver saw over TCP
	WantSeen string // expected source ("" = not checked)
}

// OK reports whether every probe passed and the source was as expected.
func (c *Cell) OK() bool {
	return c.ICMP == nil && c.TCP == nil && c.UDP == nil && (c.WantSeen == "" || c.SeenTCP == c.WantSeen)
}

func (c *Cell) short() string {
	if c.OK() {
		return "ok"
	}
	var bad []string
	if c.ICMP != nil {
		bad = append(bad, "icmp")
	}
	if c.TCP != nil {
		bad = append(bad, "tcp")
	}
	if c.UDP != nil {
		bad = append(bad, "udp")
	}
	if c.TCP == nil && c.WantSeen != "" && c.SeenTCP != c.WantSeen {
		bad = append(bad, "src="+c.SeenTCP)
	}
	return "FAIL:" + strings.Join(bad, ",")
}

// Report is the result of Check.
type Report struct {
	Targets []Target
	Cells   map[[2]string]*Cell
	// External: each pod to the external host, which must see the pod's
	// node address (masquerade).
	External []*Cell
	// IPv6: in a dual-stack lab, each pod to each other pod's IPv6
	// address, seen with the sender's own IPv6 address.
	IPv6 []*Cell
}

// Failures lists the failed cells.
func (r *Report) Failures() []*Cell {
	var out []*Cell
	for _, t := range r.Targets {
		for _, u := range r.Targets {
			if c := r.Cells[[2]string{t.Name, u.Name}]; c != nil && !c.OK() {
				out = append(out, c)
			}
		}
	}
	for _, c := range append(slices.Clip(r.External), r.IPv6...) {
		if !c.OK() {
			out = append(out, c)
		}
	}
	return out
}

// Targets lists pods then nodes.
func (l *Lab) Targets() []Target {
	var out []Target
	for _, p := range l.Pods {
		n := l.Node(p.Node)
		t := Target{Name: p.Ref(), Netns: p.Netns, IP: p.IPv4(), Pod: true, Node: p.Node}
		if n != nil {
			t.NodeIP = n.IP
		}
		out = append(out, t)
	}
	for _, n := range l.Nodes {
		out = append(out, Target{Name: n.Name, Netns: n.Netns, IP: n.IP, Node: n.Name, NodeIP: n.IP})
	}
	return out
}

// probeAll runs ICMP, TCP and UDP from t to ip:port, retrying once (the
// first packet may wait for ARP).
func probeAll(from Target, to netip.Addr, port int) *Cell {
	c := &Cell{}
	path := NetnsPath(from.Netns)
	addr := net.JoinHostPort(to.String(), fmt.Sprint(port))
	for try := range 2 {
		_, c.ICMP = probe.Ping(path, to.AsSlice(), 2*time.Second)
		c.SeenTCP, c.TCP = probe.Exchange(path, "tcp", addr, 2*time.Second)
		_, c.UDP = probe.Exchange(path, "udp", addr, 2*time.Second)
		if c.ICMP == nil && c.TCP == nil && c.UDP == nil || try == 1 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	return c
}

// Check probes every pair of pods and nodes (ICMP, TCP, UDP; pods must be
// seen with their own address) and every pod to the external host (seen as
// its node), and prints the matrix to out.
func (l *Lab) Check(out io.Writer) (*Report, error) {
	if out == nil {
		out = io.Discard
	}
	targets := l.Targets()
	var ls []*probe.Listener
	defer func() {
		for _, x := range ls {
			x.Close()
		}
	}()
	// Bound to the target's address, not the wildcard: a node has several
	// (underlay, gateway on each pod veth, the VXLAN device's), and a
	// wildcard UDP reply would leave from whichever the route prefers.
	listen := append(targets, Target{Name: "external", Netns: l.External.Netns, IP: l.External.IP})
	for _, p := range l.Pods {
		if a := p.IPv6(); a.IsValid() {
			listen = append(listen, Target{Name: p.Ref(), Netns: p.Netns, IP: a})
		}
	}
	for _, t := range listen {
		x, err := probe.Listen(NetnsPath(t.Netns), net.JoinHostPort(t.IP.String(), fmt.Sprint(ProbePort)))
		if err != nil {
			return nil, err
		}
		ls = append(ls, x)
	}
	r := &Report{Targets: targets, Cells: map[[2]string]*Cell{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	run := func(fn func()) {
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); fn() }()
	}
	for _, a := range targets {
		for _, b := range targets {
			if a.Name == b.Name {
				continue
			}
			run(func() {
				c := probeAll(a, b.IP, ProbePort)
				c.From, c.To = a.Name, b.Name
				if a.Pod {
					c.WantSeen = a.IP.String()
				}
				mu.Lock()
				r.Cells[[2]string{a.Name, b.Name}] = c
				mu.Unlock()
			})
		}
		if a.Pod {
			run(func() {
				c := probeAll(a, l.External.IP, ProbePort)
				c.From, c.To, c.WantSeen = a.Name, "external", a.NodeIP.String()
				mu.Lock()
				r.External = append(r.External, c)
				mu.Unlock()
			})
		}
	}
	for _, a := range l.Pods {
		for _, b := range l.Pods {
			if a == b || !a.IPv6().IsValid() || !b.IPv6().IsValid() {
				continue
			}
			run(func() {
				c := probeAll(Target{Netns: a.Netns}, b.IPv6(), ProbePort)
				c.From, c.To, c.WantSeen = a.Ref(), b.Ref()+" ("+b.IPv6().String()+")", a.IPv6().String()
				mu.Lock()
				r.IPv6 = append(r.IPv6, c)
				mu.Unlock()
			})
		}
	}
	wg.Wait()

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "from \\ to")
	for _, b := range targets {
		fmt.Fprintf(tw, "\t%s", b.Name)
	}
	fmt.Fprint(tw, "\texternal\n")
	ext := map[string]*Cell{}
	for _, c := range r.External {
		ext[c.From] = c
	}
	for _, a := range targets {
		fmt.Fprintf(tw, "%s (%s)", a.Name, a.IP)
		for _, b := range targets {
			if c := r.Cells[[2]string{a.Name, b.Name}]; c != nil {
				fmt.Fprintf(tw, "\t%s", c.short())
			} else {
				fmt.Fprint(tw, "\t-")
			}
		}
		if c := ext[a.Name]; c != nil {
			fmt.Fprintf(tw, "\t%s", c.short())
		} else {
			fmt.Fprint(tw, "\t-")
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	n := len(r.Cells) + len(r.External) + len(r.IPv6)
	fails := r.Failures()
	fmt.Fprintf(out, "%d pairs x ICMP/TCP/UDP; pods seen with their own address by pods and nodes, as their node's address by %s (%s)\n", n, l.External.IP, "masquerade")
	if len(r.IPv6) > 0 {
		bad := 0
		for _, c := range r.IPv6 {
			if !c.OK() {
				bad++
			}
		}
		fmt.Fprintf(out, "IPv6: %d pod-to-pod pairs (of the %d above) over the pods' IPv6 addresses, %d failed\n", len(r.IPv6), n, bad)
	}
	for _, c := range fails {
		fmt.Fprintf(out, "FAIL %s -> %s: icmp=%v tcp=%v udp=%v seen=%q want=%q\n", c.From, c.To, c.ICMP, c.TCP, c.UDP, c.SeenTCP, c.WantSeen)
	}
	if len(fails) > 0 {
		return r, fmt.Errorf("lab check: %d of %d pairs failed", len(fails), n)
	}
	fmt.Fprintf(out, "all %d pairs ok\n", n)
	return r, nil
}

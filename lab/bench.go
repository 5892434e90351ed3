package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet/internal/cniclient"
)

// Throughput is the result for one pair: every run's rate and their median.
type Throughput struct {
	What     string
	From, To string
	// Underlay is the What of the node->node pair this one is compared
	// with ("" for an underlay pair itself).
	Underlay string
	// Target is the minimum ratio to Underlay the issue asks for (0: none).
	Target float64
	Runs   []float64 // Gbit/s
	Gbps   float64   // median of Runs
	Ratio  float64   // Gbps / the underlay's Gbps (0 when not compared)
	Err    error
}

type benchPair struct {
	what, from, to string
	underlay       string  // what of the underlay pair to compare with
	target         float64 // minimum ratio
}

// benchPairs picks what the lab can measure: same-node pods, cross-node
// pods per path (host-gw when two nodes share a segment under host-gw or
// auto, vxlan over one segment and over the routed underlay) and, for each
// cross-node path, the underlay between the same two nodes, so every pod
// path is compared with the wire it actually crosses. Same-node pods are
// compared with the same-segment underlay (the fastest node-to-node path).
func (l *Lab) benchPairs() []benchPair {
	if len(l.Nodes) == 0 {
		return nil
	}
	first := func(node string) string {
		if ps := l.PodsOn(node); len(ps) > 0 {
			return ps[0].Ref()
		}
		return ""
	}
	a := l.Nodes[0]
	var same, other *Node
	for _, n := range l.Nodes[1:] {
		if n.Segment == a.Segment && same == nil {
			same = n
		}
		if n.Segment != a.Segment && other == nil {
			other = n
		}
	}
	underlayName := func(b *Node) string {
		if b.Segment == a.Segment {
			return "node->node underlay, one segment"
		}
		return "node->node underlay, routed"
	}
	var out []benchPair
	seen := map[string]bool{}
	addUnderlay := func(b *Node) string {
		u := underlayName(b)
		if !seen[u] {
			seen[u] = true
			out = append(out, benchPair{what: u, from: a.Name, to: b.Name})
		}
		return u
	}
	// The reference first: pods on one node are compared with it.
	ref := ""
	if same != nil {
		ref = addUnderlay(same)
	} else if other != nil {
		ref = addUnderlay(other)
	}
	for _, n := range l.Nodes {
		if ps := l.PodsOn(n.Name); len(ps) >= 2 {
			out = append(out, benchPair{what: "pod->pod same node", from: ps[0].Ref(), to: ps[1].Ref(), underlay: ref, target: 0.95})
			break
		}
	}
	cross := func(b *Node, path string, target float64) {
		if b == nil {
			return
		}
		u := addUnderlay(b)
		if strings.HasPrefix(path, "vxlan") {
			// The kernel's VXLAN between the two nodes' VTEP addresses,
			// without the pod hops: it splits a VXLAN pod path's cost into
			// what the tunnel itself costs and what the pods' veths and
			// the nodes' forwarding add.
			out = append(out, benchPair{what: "node->node over " + path + " (no pods)", from: a.Name, to: b.Name + vtepSuffix, underlay: u})
		}
		if pa, pb := first(a.Name), first(b.Name); pa != "" && pb != "" {
			out = append(out, benchPair{what: "pod->pod cross node, " + path, from: pa, to: pb, underlay: u, target: target})
		}
	}
	switch l.Backend {
	case HostGW:
		cross(same, "host-gw", 0.95)
	case VXLAN:
		cross(same, "vxlan", 0.90)
		cross(other, "vxlan, routed underlay", 0.90)
	case Auto:
		cross(same, "host-gw", 0.95)
		cross(other, "vxlan", 0.90)
	}
	return out
}

// Bench measures single-stream TCP throughput with iperf3 (the server in
// the receiver's namespace, the client in the sender's) for each pair
// benchPairs picks, runs times each. The runs are interleaved (every pair
// once per round) so a slow spell of a shared machine hits all pairs alike,
// and the median is reported with its ratio to the underlay of its path.
func (l *Lab) Bench(ctx context.Context, seconds, runs int, out io.Writer) ([]Throughput, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, fmt.Errorf("lab bench needs iperf3: %w", err)
	}
	if seconds <= 0 {
		seconds = 3
	}
	if runs <= 0 {
		runs = 3
	}
	pairs := l.benchPairs()
	res := make([]Throughput, len(pairs))
	for i, p := range pairs {
		res[i] = Throughput{What: p.what, From: p.from, To: p.to, Underlay: p.underlay, Target: p.target}
	}
	for range runs {
		for i, p := range pairs {
			if res[i].Err != nil {
				continue
			}
			g, err := l.iperf(ctx, p.from, p.to, 5301+i, seconds)
			if err != nil {
				res[i].Err = err
				continue
			}
			res[i].Runs = append(res[i].Runs, g)
		}
	}
	byWhat := map[string]*Throughput{}
	for i := range res {
		if res[i].Err == nil {
			res[i].Gbps = median(res[i].Runs)
		}
		byWhat[res[i].What] = &res[i]
	}
	for i := range res {
		if u := byWhat[res[i].Underlay]; u != nil && u.Err == nil && u.Gbps > 0 && res[i].Err == nil {
			res[i].Ratio = res[i].Gbps / u.Gbps
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "iperf3, 1 TCP stream, %d x %ds (lab %s, backend %s)\tfrom\tto\tGbit/s (median)\truns\tvs underlay\ttarget\n", runs, seconds, l.Name, l.Backend)
	var firstErr error
	for _, t := range res {
		if t.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\tFAIL: %v\t\t\t\n", t.What, t.From, t.To, t.Err)
			if firstErr == nil {
				firstErr = t.Err
			}
			continue
		}
		rs := make([]string, len(t.Runs))
		for i, r := range t.Runs {
			rs[i] = fmt.Sprintf("%.1f", r)
		}
		ratio, target := "-", "-"
		if t.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", t.Ratio)
		}
		if t.Target > 0 {
			verdict := "met"
			if t.Ratio < t.Target {
				verdict = "NOT met"
			}
			target = fmt.Sprintf(">= %.2f %s", t.Target, verdict)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%s\n", t.What, t.From, t.To, t.Gbps, strings.Join(rs, " "), ratio, target)
	}
	tw.Flush()
	return res, firstErr
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// vtepSuffix after a node name makes an iperf endpoint of the node's VXLAN
// device address (its subnet's first address, where the agent puts it).
const vtepSuffix = ":vxlan"

func (l *Lab) endpoint(name string) (ns, ip string, err error) {
	if node, ok := strings.CutSuffix(name, vtepSuffix); ok {
		n := l.Node(node)
		if n == nil {
			return "", "", fmt.Errorf("no node %q", node)
		}
		for _, s := range n.Subnets {
			if s.Addr().Is4() {
				return n.Netns, s.Masked().Addr().String(), nil
			}
		}
		return "", "", fmt.Errorf("node %s has no IPv4 subnet yet", node)
	}
	if p := l.Pod(name); p != nil {
		return p.Netns, p.IPv4().String(), nil
	}
	if n := l.Node(name); n != nil {
		return n.Netns, n.IP.String(), nil
	}
	return "", "", fmt.Errorf("no pod or node %q", name)
}

// iperfReport is the part of `iperf3 -J` output Bench reads. iperf3 3.12
// exits 0 when it cannot connect, with the reason in "error".
type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

func (l *Lab) iperf(ctx context.Context, from, to string, port, seconds int) (float64, error) {
	fns, _, err := l.endpoint(from)
	if err != nil {
		return 0, err
	}
	tns, tip, err := l.endpoint(to)
	if err != nil {
		return 0, err
	}
	srv := exec.CommandContext(ctx, "iperf3", "-s", "-1", "-B", tip, "-p", strconv.Itoa(port))
	if err := cniclient.StartIn(NetnsPath(tns), srv); err != nil {
		return 0, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var last error
	for try := 0; try < 30; try++ { // the server needs a moment to listen
		var stdout bytes.Buffer
		cli := exec.CommandContext(ctx, "iperf3", "-c", tip, "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds), "-J")
		cli.Stdout = &stdout
		runErr := cniclient.RunIn(NetnsPath(fns), cli)
		var r iperfReport
		switch jerr := json.Unmarshal(stdout.Bytes(), &r); {
		case jerr != nil:
			last = fmt.Errorf("iperf3 %s -> %s: %v, output %q: %v", from, to, runErr, tail(stdout.Bytes()), jerr)
		case r.Error != "":
			last = fmt.Errorf("iperf3 %s -> %s: %s", from, to, r.Error)
		case runErr != nil:
			last = fmt.Errorf("iperf3 %s -> %s: %v", from, to, runErr)
		case r.End.SumReceived.BitsPerSecond <= 0:
			return 0, fmt.Errorf("iperf3 %s -> %s: nothing received", from, to)
		default:
			return r.End.SumReceived.BitsPerSecond / 1e9, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, last
}

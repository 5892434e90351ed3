package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet/internal/cniclient"
)

// Throughput is one iperf3 measurement.
type Throughput struct {
	What     string
	From, To string
	Gbps     float64
	Err      error
}

type benchPair struct{ what, from, to string }

// benchPairs picks what the lab can measure: same-node pods, cross-node
// pods per path (host-gw when two nodes share a segment under host-gw or
// auto, vxlan when two nodes are on different segments under vxlan or
// auto) and the underlay between the same nodes.
func (l *Lab) benchPairs() []benchPair {
	var out []benchPair
	for _, n := range l.Nodes {
		if ps := l.PodsOn(n.Name); len(ps) >= 2 {
			out = append(out, benchPair{"pod->pod same node", ps[0].Name, ps[1].Name})
			break
		}
	}
	first := func(node string) string {
		if ps := l.PodsOn(node); len(ps) > 0 {
			return ps[0].Name
		}
		return ""
	}
	var same, other *Node
	if len(l.Nodes) > 0 {
		a := l.Nodes[0]
		for _, n := range l.Nodes[1:] {
			if n.Segment == a.Segment && same == nil {
				same = n
			}
			if n.Segment != a.Segment && other == nil {
				other = n
			}
		}
		add := func(b *Node, path string) {
			if b == nil {
				return
			}
			if pa, pb := first(a.Name), first(b.Name); pa != "" && pb != "" {
				out = append(out, benchPair{"pod->pod cross node (" + path + ")", pa, pb})
			}
			out = append(out, benchPair{"node->node underlay (" + path + " path)", a.Name, b.Name})
		}
		switch l.Backend {
		case HostGW:
			add(same, "host-gw")
		case VXLAN:
			add(other, "vxlan, routed underlay")
			add(same, "vxlan")
		case Auto:
			add(same, "host-gw")
			add(other, "vxlan")
		}
	}
	return out
}

// Bench measures single-stream TCP throughput with iperf3 (run inside the
// namespaces: the server started in the receiver's, the client in the
// sender's) for each pair benchPairs picks, and prints them with the ratio
// to the underlay.
func (l *Lab) Bench(ctx context.Context, seconds int, out io.Writer) ([]Throughput, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, fmt.Errorf("lab bench needs iperf3: %w", err)
	}
	if seconds <= 0 {
		seconds = 3
	}
	var res []Throughput
	for i, p := range l.benchPairs() {
		t := Throughput{What: p.what, From: p.from, To: p.to}
		t.Gbps, t.Err = l.iperf(ctx, p.from, p.to, 5301+i, seconds)
		res = append(res, t)
	}
	underlay := 0.0
	for _, t := range res {
		if t.Err == nil && len(t.What) > 4 && t.What[:4] == "node" && underlay == 0 {
			underlay = t.Gbps
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "iperf3, 1 TCP stream, %ds (lab %s, backend %s)\tfrom\tto\tGbit/s\tvs underlay\n", seconds, l.Name, l.Backend)
	var firstErr error
	for _, t := range res {
		if t.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\tFAIL: %v\t\n", t.What, t.From, t.To, t.Err)
			if firstErr == nil {
				firstErr = t.Err
			}
			continue
		}
		ratio := "-"
		if underlay > 0 {
			ratio = fmt.Sprintf("%.2f", t.Gbps/underlay)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\n", t.What, t.From, t.To, t.Gbps, ratio)
	}
	tw.Flush()
	return res, firstErr
}

func (l *Lab) endpoint(name string) (ns, ip string, err error) {
	if p := l.Pod(name); p != nil {
		return p.Netns, p.IPv4().String(), nil
	}
	if n := l.Node(name); n != nil {
		return n.Netns, n.IP.String(), nil
	}
	return "", "", fmt.Errorf("no pod or node %q", name)
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
	var stdout bytes.Buffer
	var cerr error
	for try := 0; try < 20; try++ { // the server needs a moment to listen
		stdout.Reset()
		cli := exec.CommandContext(ctx, "iperf3", "-c", tip, "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds), "-J")
		cli.Stdout = &stdout
		if cerr = cniclient.RunIn(NetnsPath(fns), cli); cerr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cerr != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s: %v %s", from, to, cerr, tail(stdout.Bytes()))
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

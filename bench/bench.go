// Package bench measures what one pod costs the node: CNI ADD and DEL of a
// chain of plugins, podnet against the reference plugins
// (containernetworking/plugins v1.9.1), in the same run and driven the same
// way. Two chains are timed:
//
//   - bridge: bridge (isGateway, ipMasq) + host-local;
//   - meta: the same plus portmap (one host port mapping per pod, passed by
//     the runtime as the portMappings capability) and firewall. The
//     reference runs it twice: with its iptables backends (bridge
//     ipMasqBackend, portmap backend, firewall backend all "iptables") and
//     with its nftables backends (bridge ipMasqBackend and portmap backend
//     "nftables"; v1.9.1's firewall has no nftables backend, only iptables
//     and firewalld, so it stays on iptables). On this node `iptables` is
//     iptables-nft.
//
// How it measures, and why:
//   - Every implementation is driven by libcni from this process, which
//     execs the plugins exactly as a runtime does. Every plugin is started
//     inside a "node" network namespace created here (one per
//     implementation, so bridges, rules and IPAM state cannot interfere);
//     the root namespace is never touched.
//   - Sequential: each iteration creates a fresh pod namespace before the
//     clock starts and deletes it after DEL, untimed. The implementations
//     rotate which goes first, so drift (page cache, CPU frequency, kernel
//     netns cleanup) hits all alike.
//   - The floor is a loopback-only ADD driven the same way: the cost of the
//     runtime starting one plugin that does almost nothing. It is measured
//     with every implementation's loopback, and the smallest is used. ADD
//     and DEL are each one libcni call, so "above floor" is ADD+DEL minus
//     twice the floor: the work the plugins really do (for a chain of k
//     plugins that includes k-1 extra process starts, which are part of
//     what a chain costs).
//   - ADD and DEL are medians over the iterations, after a few warm-up
//     rounds (the first of which checks that the pod really got its address
//     and, on the meta chain, that it answers on its host port from the
//     node); ADD+DEL is their sum.
//   - Parallel: N pods (default 50) are ADDed at once, one goroutine per
//     pod each calling libcni, then DELed at once; the wall time of each
//     wave gives pods/s. The pod namespaces are made before and removed
//     after, untimed. A wave of N loopback ADDs is the parallel floor.
//
// Everything the run creates (namespaces, temporary directories with the
// configuration, host-local data, portmap lock and libcni cache) is removed
// at the end, also on error or cancellation.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
)

// ReferenceVersion is the release of containernetworking/plugins podnet is
// compared with.
const ReferenceVersion = "v1.9.1"

// Target is the ratio podnet/reference (above floor) podnet aims to stay under.
const Target = 0.10

// EnvReferenceDir names a directory with the reference plugins (CI installs
// them in /var/cache/podnet-ref); FindReference looks there first.
const EnvReferenceDir = "PODNET_REF_DIR"

// InstallHint says how to get the reference plugins into dir.
func InstallHint(dir string) string {
	return fmt.Sprintf("GOBIN=%s go install github.com/containernetworking/plugins/plugins/...@%s", dir, ReferenceVersion)
}

// Chains the benchmark can time.
const (
	ChainBridge    = "bridge"     // bridge (isGateway, ipMasq) + host-local
	ChainMeta      = "meta"       // bridge + host-local + portmap (one mapping) + firewall
	ChainHostLocal = "host-local" // host-local alone: IPAM only, for development
	ChainMacvlan   = "macvlan"    // macvlan (bridge mode, on a node uplink) + host-local
	ChainAll       = "all"        // bridge, then meta (for Chains; Run times one chain)
)

// Chains expands a --chain value into the chains to run, in order.
func Chains(chain string) ([]string, error) {
	switch chain {
	case "", ChainAll:
		return []string{ChainBridge, ChainMeta}, nil
	case ChainBridge, ChainMeta, ChainHostLocal, ChainMacvlan:
		return []string{chain}, nil
	}
	return nil, fmt.Errorf("unknown chain %q (want %s, %s, %s, %s or %s)", chain, ChainAll, ChainBridge, ChainMeta, ChainMacvlan, ChainHostLocal)
}

// plugins each chain needs (besides loopback, for the floor).
func chainPlugins(chain string) []string {
	switch chain {
	case ChainHostLocal:
		return []string{"host-local"}
	case ChainMeta:
		return []string{"bridge", "host-local", "portmap", "firewall"}
	case ChainMacvlan:
		return []string{"macvlan", "host-local"}
	}
	return []string{"bridge", "host-local"}
}

// DefaultParallel is how many pods the parallel run ADDs at once.
const DefaultParallel = 50

// Options configure Run.
type Options struct {
	Iterations   int    // timed iterations per implementation (default 50)
	Warmup       int    // untimed iterations first (default 2, at least 1: the first also checks the pod)
	ReferenceDir string // directory with the reference plugins ("" = FindReference)
	Podnet       string // the podnet binary ("" = os.Executable)
	Chain        string // ChainBridge (default), ChainMeta or ChainHostLocal
	// Parallel is the number of pods ADDed (then DELed) at once in the
	// parallel run: 0 = DefaultParallel, negative = no parallel run.
	Parallel int
	// ParallelRounds is how many parallel waves per implementation (default
	// 1); the report has the median wall times.
	ParallelRounds int
	Log            io.Writer
}

// Stats are the sequential medians of one implementation.
type Stats struct {
	Name   string
	Add    time.Duration
	Del    time.Duration
	AddDel time.Duration // Add + Del (sum of the medians)
	Floor  time.Duration // its own loopback ADD
	// FloorFirst and FloorLast are its loopback ADD medians over the
	// first and the last quarter of the iterations: how much the
	// machine's speed moved during the run.
	FloorFirst, FloorLast time.Duration
	Samples               int
}

// ParStats are the parallel wall times of one implementation (medians
// over the rounds).
type ParStats struct {
	Name   string
	Pods   int
	Rounds int
	Add    time.Duration // N ADDs at once, first start to last return
	Del    time.Duration // N DELs at once
	Floor  time.Duration // N loopback ADDs at once
}

// PodsPerSec is pods/d.
func (p ParStats) PodsPerSec(d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(p.Pods) / d.Seconds()
}

// Report is the outcome of one run (one chain).
type Report struct {
	Chain      string
	Iterations int
	// Impls are podnet first, then the reference variants.
	Impls []Stats
	// Floor is the smallest loopback ADD median.
	Floor time.Duration
	// Parallel has one entry per implementation, in Impls' order; empty
	// when the parallel run was off.
	Parallel []ParStats
	// ReferenceDir and PodnetBin are what was measured; ReferenceAbout is
	// what the reference bridge says about itself.
	ReferenceDir   string
	ReferenceAbout string
	PodnetBin      string
	// LoadBefore and LoadAfter are /proc/loadavg's 1-minute load average
	// before the first and after the last iteration (-1 unknown).
	LoadBefore, LoadAfter float64
}

// MaxFloorDrift is how far the floor may move between the first and the
// last quarter of a run before the run's ratios are not called met or
// not met: the machine's speed changed under the comparison.
const MaxFloorDrift = 0.20

// FloorDrift is the largest relative move of any implementation's floor
// between the first and the last quarter of the iterations.
func (r *Report) FloorDrift() float64 {
	d := 0.0
	for _, s := range r.Impls {
		if s.FloorFirst > 0 {
			d = max(d, math.Abs(float64(s.FloorLast-s.FloorFirst))/float64(s.FloorFirst))
		}
	}
	return d
}

// Podnet returns podnet's stats.
func (r *Report) Podnet() Stats { return r.Impls[0] }

// References returns the reference variants' stats.
func (r *Report) References() []Stats { return r.Impls[1:] }

// HarnessExecs is how many plugin processes libcni starts per verb for the
// chain: one per conflist entry (a plugin's own delegations, like the
// reference bridge exec'ing host-local, are the plugin's cost, not the
// harness's).
func HarnessExecs(chain string) int {
	if chain == ChainMeta {
		return 3 // bridge, portmap, firewall
	}
	return 1
}

// AboveFloor is ADD+DEL minus the harness floor: one loopback-sized plugin
// start per plugin libcni runs, per verb.
func (r *Report) AboveFloor(s Stats) time.Duration {
	return s.AddDel - time.Duration(2*HarnessExecs(r.Chain))*r.Floor
}

// StrictAboveFloor subtracts a single floor per verb whatever the chain
// length; printed too, for comparison.
func (r *Report) StrictAboveFloor(s Stats) time.Duration { return s.AddDel - 2*r.Floor }

// Ratio is podnet/ref, both above the floor.
func (r *Report) Ratio(ref Stats) float64 {
	return ratioOf(r.AboveFloor(r.Podnet()), r.AboveFloor(ref))
}

// StrictRatio is Ratio with StrictAboveFloor.
func (r *Report) StrictRatio(ref Stats) float64 {
	return ratioOf(r.StrictAboveFloor(r.Podnet()), r.StrictAboveFloor(ref))
}

func ratioOf(p, ref time.Duration) float64 {
	if ref <= 0 {
		return 0
	}
	return float64(p) / float64(ref)
}

// MaxRatio is the largest ratio over the reference variants (the one the
// target is judged by).
func (r *Report) MaxRatio() float64 {
	m := 0.0
	for _, s := range r.References() {
		m = max(m, r.Ratio(s))
	}
	return m
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// ChainDescription says in words what chain times.
func ChainDescription(chain string) string {
	switch chain {
	case ChainHostLocal:
		return "host-local only (IPAM, development chain)"
	case ChainMeta:
		return "bridge(isGateway, ipMasq) + host-local + portmap(1 mapping) + firewall"
	case ChainMacvlan:
		return "macvlan(bridge mode, master = a node uplink) + host-local"
	}
	return "bridge(isGateway, ipMasq) + host-local"
}

// WriteTable prints the report.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "CNI per pod, sequential: %s, %d iterations, median ms, plugins exec'd by libcni inside a node netns\n",
		ChainDescription(r.Chain), r.Iterations)
	fmt.Fprintf(w, "%-20s %8s %8s %8s %8s %12s %8s\n", "impl", "ADD", "DEL", "ADD+DEL", "floor", "above floor", "podnet/x")
	for i, s := range r.Impls {
		ratio := "-"
		if i > 0 {
			ratio = fmt.Sprintf("%.3f", r.Ratio(s))
		}
		fmt.Fprintf(w, "%-20s %8s %8s %8s %8s %12s %8s\n", s.Name, ms(s.Add), ms(s.Del), ms(s.AddDel), ms(r.Floor), ms(r.AboveFloor(s)), ratio)
	}
	var floors []string
	for _, s := range r.Impls {
		floors = append(floors, fmt.Sprintf("%s %s", s.Name, ms(s.Floor)))
	}
	fmt.Fprintf(w, "floor = loopback-only ADD, smallest of (%s) ms; above floor = ADD+DEL - 2 verbs x %d plugin start(s) x floor\n", strings.Join(floors, ", "), HarnessExecs(r.Chain))
	drift := r.FloorDrift()
	fmt.Fprintf(w, "machine: load average %s before, %s after; floor moved %.0f%% between the first and the last quarter of the run (limit %.0f%%)\n",
		loadString(r.LoadBefore), loadString(r.LoadAfter), 100*drift, 100*MaxFloorDrift)
	for _, s := range r.References() {
		verdict := "met"
		switch {
		case drift > MaxFloorDrift:
			verdict = "undecided: the floor moved during the run"
		case r.Ratio(s) > Target:
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "ratio podnet/%s (above floor): %.3f  (target <= %.2f: %s)", s.Name, r.Ratio(s), Target, verdict)
		if HarnessExecs(r.Chain) > 1 {
			fmt.Fprintf(w, "; with one floor per verb only: %.3f", r.StrictRatio(s))
		}
		fmt.Fprintln(w)
	}
	if r.Chain == ChainMeta {
		fmt.Fprintf(w, "reference-iptables: bridge ipMasqBackend, portmap and firewall backend iptables; reference-nftables: bridge ipMasqBackend and portmap backend nftables, firewall iptables (v1.9.1 has no nftables firewall backend)\n")
	}
	if len(r.Parallel) > 0 {
		p0 := r.Parallel[0]
		fmt.Fprintf(w, "\nCNI parallel: %d pods ADDed at once (one goroutine each, libcni), then %d DELed at once; wall time ms (median of %d round(s)), pods/s\n",
			p0.Pods, p0.Pods, p0.Rounds)
		fmt.Fprintf(w, "%-20s %10s %10s %10s %10s %12s\n", "impl", "ADD wall", "ADD pods/s", "DEL wall", "DEL pods/s", "ADD+DEL p/s")
		for _, p := range r.Parallel {
			fmt.Fprintf(w, "%-20s %10s %10.1f %10s %10.1f %12.1f\n", p.Name, ms(p.Add), p.PodsPerSec(p.Add), ms(p.Del), p.PodsPerSec(p.Del), p.PodsPerSec(p.Add+p.Del))
		}
		var fl []string
		for _, p := range r.Parallel {
			fl = append(fl, fmt.Sprintf("%s %s ms = %.1f pods/s", p.Name, ms(p.Floor), p.PodsPerSec(p.Floor)))
		}
		fmt.Fprintf(w, "parallel floor (%d loopback ADDs at once): %s\n", p0.Pods, strings.Join(fl, ", "))
	}
	fmt.Fprintf(w, "reference plugins: %s (bridge: %q); podnet: %s\n", r.ReferenceDir, r.ReferenceAbout, r.PodnetBin)
}

// FindReference looks for the reference plugins in $PODNET_REF_DIR, $GOBIN,
// $GOPATH/bin, ~/go/bin, /var/cache/podnet-ref and /tmp/refbin, and returns
// the first directory that has bridge, host-local, loopback, portmap and
// firewall.
func FindReference() (string, error) {
	var cands []string
	if d := os.Getenv(EnvReferenceDir); d != "" {
		cands = append(cands, d)
	}
	if d := os.Getenv("GOBIN"); d != "" {
		cands = append(cands, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		for _, p := range filepath.SplitList(d) {
			cands = append(cands, filepath.Join(p, "bin"))
		}
	}
	if h, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(h, "go", "bin"))
	}
	cands = append(cands, "/var/cache/podnet-ref", "/tmp/refbin")
	for _, d := range cands {
		if hasPlugins(d, "bridge", "host-local", "loopback", "portmap", "firewall") {
			return d, nil
		}
	}
	return "", fmt.Errorf("reference plugins %s not found in %s; install them with: %s (and pass --reference-dir DIR or set $%s)",
		ReferenceVersion, strings.Join(cands, ", "), InstallHint("DIR"), EnvReferenceDir)
}

func hasPlugins(dir string, names ...string) bool {
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// about runs a plugin without CNI_COMMAND; it prints its about string.
func about(ctx context.Context, plugin string) string {
	cmd := exec.CommandContext(ctx, plugin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var out bytes.Buffer
	cmd.Stderr = &out
	_ = cmd.Run()
	line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	return line
}

// Backends of a reference variant.
const (
	backendPodnet   = ""         // podnet: no backend fields (it has one, nftables)
	backendDefault  = "default"  // reference, backends left to the plugins (iptables when present)
	backendIPTables = "iptables" // reference, every backend iptables
	backendNFTables = "nftables" // reference, nftables where v1.9.1 has it
)

// impl is one implementation under test.
type impl struct {
	name    string
	path    string // CNI_PATH
	backend string
	nodeNS  string // name of its node netns
	num     int    // its index: subnet, bridge name
	cl      *cniclient.Client
	chain   *libcni.NetworkConfigList
	lo      *libcni.NetworkConfigList
	adds    []time.Duration
	dels    []time.Duration
	floors  []time.Duration
	par     []parRound
}

// run carries what one Run has made, for cleanup.
type run struct {
	o       Options
	tmp     string
	nsNames []string
}

// Run times one chain and returns the report. It needs root (namespaces).
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if o.Iterations <= 0 {
		o.Iterations = 50
	}
	if o.Warmup == 0 {
		o.Warmup = 2
	} else if o.Warmup < 1 {
		o.Warmup = 1 // the first iteration checks the result, untimed
	}
	if o.Chain == "" {
		o.Chain = ChainBridge
	}
	if cs, err := Chains(o.Chain); err != nil || len(cs) != 1 {
		return nil, fmt.Errorf("unknown chain %q for Run (want %s, %s, %s or %s; %s is for the command)", o.Chain, ChainBridge, ChainMeta, ChainMacvlan, ChainHostLocal, ChainAll)
	}
	if o.Parallel == 0 {
		o.Parallel = DefaultParallel
	}
	if o.ParallelRounds <= 0 {
		o.ParallelRounds = 1
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench needs root: it creates network namespaces")
	}
	need := append(chainPlugins(o.Chain), "loopback")
	if o.ReferenceDir == "" {
		if o.ReferenceDir, err = FindReference(); err != nil {
			return nil, err
		}
	} else if !hasPlugins(o.ReferenceDir, need...) {
		return nil, fmt.Errorf("reference dir %s lacks one of %s; install them with: %s",
			o.ReferenceDir, strings.Join(need, ", "), InstallHint(o.ReferenceDir))
	}
	if o.Podnet == "" {
		if o.Podnet, err = os.Executable(); err != nil {
			return nil, err
		}
	}

	r := &run{o: o}
	if r.tmp, err = os.MkdirTemp("", "podnet-bench-"); err != nil {
		return nil, err
	}
	defer func() {
		var errs []error
		for _, n := range r.nsNames {
			if derr := netns.Delete(n); derr != nil {
				errs = append(errs, derr)
			}
		}
		if rerr := os.RemoveAll(r.tmp); rerr != nil {
			errs = append(errs, rerr)
		}
		err = errors.Join(err, errors.Join(errs...))
	}()

	// podnet's plugin links, made by the binary itself.
	pnBin := filepath.Join(r.tmp, "podnet-bin")
	if out, err := exec.CommandContext(ctx, o.Podnet, "plugins", "install", "--dir", pnBin).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s plugins install: %v: %s", o.Podnet, err, out)
	}
	for _, n := range need {
		if _, err := os.Lstat(filepath.Join(pnBin, n)); err != nil {
			return nil, fmt.Errorf("%s provides no %q plugin yet (see `podnet plugins list`); use --chain %s meanwhile", o.Podnet, n, ChainHostLocal)
		}
	}

	impls := []*impl{{name: "podnet", path: pnBin, backend: backendPodnet}}
	if o.Chain == ChainMeta {
		impls = append(impls,
			&impl{name: "reference-iptables", path: o.ReferenceDir, backend: backendIPTables},
			&impl{name: "reference-nftables", path: o.ReferenceDir, backend: backendNFTables})
	} else {
		impls = append(impls, &impl{name: "reference", path: o.ReferenceDir, backend: backendDefault})
	}
	for i, im := range impls {
		im.num = i
		if err := r.setup(im); err != nil {
			return nil, fmt.Errorf("%s: %w", im.name, err)
		}
	}

	loadBefore := loadAverage()
	total := o.Warmup + o.Iterations
	for it := 0; it < total; it++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		timed := it >= o.Warmup
		for k := range impls {
			im := impls[(it+k)%len(impls)] // rotate who goes first
			if err := r.iteration(ctx, im, it, timed, it == 0); err != nil {
				return nil, fmt.Errorf("%s, iteration %d: %w", im.name, it, err)
			}
		}
		if timed && (it-o.Warmup+1)%10 == 0 {
			fmt.Fprintf(o.Log, "bench %s: %d/%d iterations\n", o.Chain, it-o.Warmup+1, o.Iterations)
		}
	}

	if o.Parallel > 0 {
		for round := 0; round < o.ParallelRounds; round++ {
			for k := range impls {
				im := impls[(round+k)%len(impls)]
				if err := r.parallel(ctx, im, round); err != nil {
					return nil, fmt.Errorf("%s, parallel round %d: %w", im.name, round, err)
				}
			}
			fmt.Fprintf(o.Log, "bench %s: parallel round %d/%d\n", o.Chain, round+1, o.ParallelRounds)
		}
	}

	rep = &Report{Chain: o.Chain, Iterations: o.Iterations, ReferenceDir: o.ReferenceDir, PodnetBin: o.Podnet,
		ReferenceAbout: about(ctx, filepath.Join(o.ReferenceDir, "bridge")), LoadBefore: loadBefore, LoadAfter: loadAverage()}
	for i, im := range impls {
		s := im.stats()
		rep.Impls = append(rep.Impls, s)
		if i == 0 || s.Floor < rep.Floor {
			rep.Floor = s.Floor
		}
		if o.Parallel > 0 {
			rep.Parallel = append(rep.Parallel, im.parStats(o.Parallel))
		}
	}
	return rep, nil
}

// setup makes the implementation's node namespace, its libcni client and
// its configurations.
func (r *run) setup(im *impl) error {
	dir := filepath.Join(r.tmp, im.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	im.nodeNS = fmt.Sprintf("pnb-node-%d-%d", im.num, os.Getpid())
	r.nsNames = append(r.nsNames, im.nodeNS)
	nodePath, err := netns.Create(im.nodeNS)
	if err != nil {
		return err
	}
	if err := loUp(nodePath); err != nil {
		return err
	}
	if r.o.Chain == ChainMacvlan {
		if err := uplink(nodePath); err != nil {
			return err
		}
	}
	im.cl = cniclient.New(cniclient.Config{
		Path:      []string{im.path},
		CacheDir:  filepath.Join(dir, "cache"),
		NodeNetns: nodePath,
	})
	if im.chain, err = libcni.ConfListFromBytes([]byte(chainConf(r.o.Chain, im.name, im.backend, im.num, dir))); err != nil {
		return fmt.Errorf("chain config: %w", err)
	}
	if im.lo, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-lo-%s","plugins":[{"type":"loopback"}]}`, im.name))); err != nil {
		return err
	}
	return nil
}

// Host ports: one per pod, distinct within a run.
const (
	seqHostPortBase = 20000 // + iteration
	parHostPortBase = 40000 // + pod number
	containerPort   = 8080
)

// attachment is pod number k's runtime configuration: container ID, netns,
// and (meta chain) its one port mapping.
func (r *run) attachment(cid, pod string, hostPort int) cniclient.Attachment {
	a := cniclient.Attachment{ContainerID: cid, NetNS: pod, IfName: "eth0"}
	if r.o.Chain == ChainMeta {
		a.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
			{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"},
		}}
	}
	return a
}

// iteration makes a pod netns, times ADD and DEL of the chain, then a
// loopback ADD (the floor), and removes the pod namespaces again.
func (r *run) iteration(ctx context.Context, im *impl, it int, timed, verify bool) error {
	cid := fmt.Sprintf("pnbench-%d", it)
	pod, err := r.newPod(fmt.Sprintf("pnb-pod-%d-%d-%d", im.num, os.Getpid(), it))
	if err != nil {
		return err
	}
	hostPort := seqHostPortBase + it
	att := r.attachment(cid, pod, hostPort)
	t0 := time.Now()
	res, aerr := im.cl.Add(ctx, im.chain, att)
	t1 := time.Now()
	if aerr == nil && verify && r.o.Chain != ChainHostLocal {
		aerr = r.checkPod(im, pod, res, hostPort)
		t1 = time.Now()
	}
	derr := im.cl.Del(ctx, im.chain, att)
	t2 := time.Now()
	if err := errors.Join(aerr, derr, r.dropPod()); err != nil {
		return err
	}

	pod, err = r.newPod(fmt.Sprintf("pnb-lo-%d-%d-%d", im.num, os.Getpid(), it))
	if err != nil {
		return err
	}
	att = cniclient.Attachment{ContainerID: cid, NetNS: pod, IfName: "lo"}
	t3 := time.Now()
	_, aerr = im.cl.Add(ctx, im.lo, att)
	t4 := time.Now()
	derr = im.cl.Del(ctx, im.lo, att)
	if err := errors.Join(aerr, derr, r.dropPod()); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if timed {
		im.adds = append(im.adds, t1.Sub(t0))
		im.dels = append(im.dels, t2.Sub(t1))
		im.floors = append(im.floors, t4.Sub(t3))
	}
	return nil
}

// newPod creates a pod namespace and records it for cleanup.
func (r *run) newPod(name string) (string, error) {
	p, err := netns.Create(name)
	if err != nil {
		return "", err
	}
	r.nsNames = append(r.nsNames, name)
	return p, nil
}

// dropPod deletes the most recently created pod namespace.
func (r *run) dropPod() error {
	n := len(r.nsNames) - 1
	err := netns.Delete(r.nsNames[n])
	r.nsNames = r.nsNames[:n]
	return err
}

func (im *impl) stats() Stats {
	add, del := median(im.adds), median(im.dels)
	q := max(1, len(im.floors)/4)
	return Stats{
		Name:       im.name,
		Add:        add,
		Del:        del,
		AddDel:     add + del,
		Floor:      median(im.floors),
		FloorFirst: median(im.floors[:min(q, len(im.floors))]),
		FloorLast:  median(im.floors[max(0, len(im.floors)-q):]),
		Samples:    len(im.adds),
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// subnet is implementation i's pod subnet: a /16, so the parallel run
// never runs out of addresses.
func subnet(i int) string { return fmt.Sprintf("10.%d.0.0/16", 200+i) }

// gateway is the bridge's address in subnet(i), the node address a host
// port is reached at.
func gateway(i int) net.IP { return net.IPv4(10, byte(200+i), 0, 1) }

// chainConf is the network list timed for implementation number i: its own
// bridge, subnet, host-local data directory and (podnet) portmap lock
// directory under dir. backend picks the reference's backends (see the
// backend* constants); podnet gets none.
func chainConf(chain, name, backend string, i int, dir string) string {
	ipam := fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}`,
		filepath.Join(dir, "ipam"), subnet(i))
	if chain == ChainHostLocal {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-%s","plugins":[{"type":"host-local","ipam":%s}]}`, name, ipam)
	}
	masq, pmBackend, fwBackend := "", "", ""
	switch backend {
	case backendIPTables:
		masq, pmBackend, fwBackend = `,"ipMasqBackend":"iptables"`, `,"backend":"iptables"`, `,"backend":"iptables"`
	case backendNFTables:
		// v1.9.1's firewall has only iptables and firewalld backends.
		masq, pmBackend, fwBackend = `,"ipMasqBackend":"nftables"`, `,"backend":"nftables"`, `,"backend":"iptables"`
	case backendPodnet:
		pmBackend = fmt.Sprintf(`,"dataDir":%q`, filepath.Join(dir, "portmap"))
	}
	if chain == ChainMacvlan {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-%s","plugins":[{"type":"macvlan","master":%q,"ipam":%s}]}`, name, uplinkName, ipam)
	}
	br := fmt.Sprintf(`{"type":"bridge","bridge":"pnb-br%d","isGateway":true,"ipMasq":true%s,"ipam":%s}`, i, masq, ipam)
	if chain == ChainBridge {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-%s","plugins":[%s]}`, name, br)
	}
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-%s","plugins":[%s,`+
		`{"type":"portmap","capabilities":{"portMappings":true}%s},`+
		`{"type":"firewall"%s}]}`, name, br, pmBackend, fwBackend)
}

// checkPod makes sure the ADD really happened, so a plugin that does
// nothing cannot look fast: the pod's eth0 carries the IPv4 address the
// result reports and, on the meta chain, a TCP connection from the node to
// its gateway address and the pod's host port reaches a server in the pod.
func (r *run) checkPod(im *impl, pod string, res types.Result, hostPort int) error {
	cur, err := current.GetResult(res)
	if err != nil {
		return err
	}
	if len(cur.IPs) == 0 {
		return fmt.Errorf("ADD result has no IP: %v", res)
	}
	want := cur.IPs[0].Address.IP
	if err := netns.Do(pod, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("pod eth0 after ADD: %w", err)
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.IP.Equal(want) {
				return nil
			}
		}
		return fmt.Errorf("pod eth0 has %v, not the result's %s", as, want)
	}); err != nil {
		return err
	}
	if r.o.Chain != ChainMeta {
		return nil
	}
	l, err := probe.Listen(pod, fmt.Sprintf("0.0.0.0:%d", containerPort))
	if err != nil {
		return err
	}
	defer l.Close()
	addr := net.JoinHostPort(gateway(im.num).String(), fmt.Sprint(hostPort))
	if _, err := probe.Exchange(netns.Path(im.nodeNS), "tcp", addr, 5*time.Second); err != nil {
		return fmt.Errorf("host port %d does not reach the pod from the node: %w", hostPort, err)
	}
	return nil
}

// uplinkName is the macvlan chain's master: one end of a veth pair whose
// other end stays in the node namespace too, standing for the node's NIC.
const uplinkName = "pnb-up0"

// uplink makes the macvlan chain's master in the node namespace at path.
func uplink(path string) error {
	return netns.Do(path, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: uplinkName}, PeerName: uplinkName + "p"}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("node uplink: %w", err)
		}
		for _, n := range []string{uplinkName, uplinkName + "p"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
}

// loUp brings lo up in the namespace at path (a node has its loopback up).
func loUp(path string) error {
	return netns.Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
}

// loadAverage is /proc/loadavg's 1-minute load average, -1 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

func loadString(v float64) string {
	if v < 0 {
		return "unknown"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

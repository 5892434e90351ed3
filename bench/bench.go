// Package bench measures what one pod costs the node: CNI ADD and DEL of the
// chain bridge (isGateway, ipMasq) + host-local, podnet against the reference
// plugins (containernetworking/plugins v1.9.1), in the same run and driven
// the same way.
//
// How it measures, and why:
//   - Both implementations are driven by libcni from this process, which
//     execs the plugins exactly as a runtime does. Every plugin is started
//     inside a "node" network namespace created here (one per implementation,
//     so bridges, masquerade rules and IPAM state cannot interfere); the root
//     namespace is never touched.
//   - Each iteration creates a fresh pod namespace before the clock starts
//     and deletes it after DEL, untimed. The implementations alternate which
//     goes first, so drift (page cache, CPU frequency, kernel netns cleanup)
//     hits both alike.
//   - The floor is a loopback-only ADD driven the same way: the cost of the
//     runtime starting one plugin that does almost nothing. It is measured
//     with both the reference and podnet loopback, and the smaller is used.
//     ADD and DEL are each one exec from libcni, so "above floor" is
//     ADD+DEL minus twice the floor: the work the plugins really do.
//   - ADD and DEL are medians over the iterations, after a few warm-up
//     rounds (the first of which checks that the pod really got its
//     address); ADD+DEL is their sum.
//
// Everything the run creates (namespaces, temporary directories with the
// configuration, host-local data and libcni cache) is removed at the end,
// also on error or cancellation.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/netns"
)

// ReferenceVersion is the release of containernetworking/plugins podnet is
// compared with.
const ReferenceVersion = "v1.9.1"

// Target is the ratio podnet/reference (above floor) podnet aims to stay under.
const Target = 0.10

// InstallHint says how to get the reference plugins into dir.
func InstallHint(dir string) string {
	return fmt.Sprintf("GOBIN=%s go install github.com/containernetworking/plugins/plugins/...@%s", dir, ReferenceVersion)
}

// Chains the benchmark can time.
const (
	ChainBridge    = "bridge"     // bridge (isGateway, ipMasq) + host-local: the real measurement
	ChainHostLocal = "host-local" // host-local alone: IPAM only, for development
)

// Options configure Run.
type Options struct {
	Iterations   int    // timed iterations per implementation (default 50)
	Warmup       int    // untimed iterations first (default 2, at least 1: the first also checks the pod got its address)
	ReferenceDir string // directory with the reference plugins ("" = FindReference)
	Podnet       string // the podnet binary ("" = os.Executable)
	Chain        string // ChainBridge (default) or ChainHostLocal
	Log          io.Writer
}

// Stats are the medians of one implementation.
type Stats struct {
	Name    string
	About   string // what the plugin says about itself (version)
	Add     time.Duration
	Del     time.Duration
	AddDel  time.Duration // Add + Del (sum of the medians)
	Floor   time.Duration // its own loopback ADD
	Samples int
}

// Report is the outcome of one run.
type Report struct {
	Chain      string
	Iterations int
	Reference  Stats
	Podnet     Stats
	// Floor is the smaller of the two loopback ADD medians.
	Floor time.Duration
	// ReferenceDir and PodnetBin are what was measured.
	ReferenceDir string
	PodnetBin    string
}

// AboveFloor is ADD+DEL minus one floor per verb.
func (r *Report) AboveFloor(s Stats) time.Duration { return s.AddDel - 2*r.Floor }

// Ratio is podnet/reference, both above the floor.
func (r *Report) Ratio() float64 {
	ref := r.AboveFloor(r.Reference)
	if ref <= 0 {
		return 0
	}
	return float64(r.AboveFloor(r.Podnet)) / float64(ref)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// WriteTable prints the report.
func (r *Report) WriteTable(w io.Writer) {
	chain := "bridge(isGateway, ipMasq) + host-local"
	if r.Chain == ChainHostLocal {
		chain = "host-local only (IPAM, development chain)"
	}
	fmt.Fprintf(w, "CNI per pod: %s, %d iterations, median ms, plugins exec'd by libcni inside a node netns\n", chain, r.Iterations)
	fmt.Fprintf(w, "%-10s %8s %8s %8s %8s %12s\n", "impl", "ADD", "DEL", "ADD+DEL", "floor", "above floor")
	for _, s := range []Stats{r.Reference, r.Podnet} {
		fmt.Fprintf(w, "%-10s %8s %8s %8s %8s %12s\n", s.Name, ms(s.Add), ms(s.Del), ms(s.AddDel), ms(r.Floor), ms(r.AboveFloor(s)))
	}
	fmt.Fprintf(w, "floor = loopback-only ADD, smaller of reference (%s ms) and podnet (%s ms); above floor = ADD+DEL - 2 x floor\n",
		ms(r.Reference.Floor), ms(r.Podnet.Floor))
	verdict := "met"
	if r.Ratio() > Target {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "ratio podnet/reference (above floor): %.3f  (target <= %.2f: %s)\n", r.Ratio(), Target, verdict)
	fmt.Fprintf(w, "reference plugins: %s (bridge: %q); podnet: %s\n", r.ReferenceDir, r.Reference.About, r.PodnetBin)
}

// FindReference looks for the reference plugins in $GOBIN, $GOPATH/bin,
// ~/go/bin and /tmp/refbin.
func FindReference() (string, error) {
	var cands []string
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
	cands = append(cands, "/tmp/refbin")
	for _, d := range cands {
		if hasPlugins(d, "bridge", "host-local", "loopback") {
			return d, nil
		}
	}
	return "", fmt.Errorf("reference plugins %s not found in %s; install them with: %s (and pass --reference-dir DIR)",
		ReferenceVersion, strings.Join(cands, ", "), InstallHint("DIR"))
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

// impl is one implementation under test.
type impl struct {
	name   string
	path   string // CNI_PATH
	nodeNS string // name of its node netns
	cl     *cniclient.Client
	chain  *libcni.NetworkConfigList
	lo     *libcni.NetworkConfigList
	adds   []time.Duration
	dels   []time.Duration
	floors []time.Duration
	info   string // the bridge plugin's about string
}

// Run measures and returns the report. It needs root (namespaces).
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
	if o.Chain != ChainBridge && o.Chain != ChainHostLocal {
		return nil, fmt.Errorf("unknown chain %q (want %s or %s)", o.Chain, ChainBridge, ChainHostLocal)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench needs root: it creates network namespaces")
	}
	if o.ReferenceDir == "" {
		if o.ReferenceDir, err = FindReference(); err != nil {
			return nil, err
		}
	} else if !hasPlugins(o.ReferenceDir, "bridge", "host-local", "loopback") {
		return nil, fmt.Errorf("reference dir %s lacks bridge, host-local or loopback; install them with: %s",
			o.ReferenceDir, InstallHint(o.ReferenceDir))
	}
	if o.Podnet == "" {
		if o.Podnet, err = os.Executable(); err != nil {
			return nil, err
		}
	}

	tmp, err := os.MkdirTemp("", "podnet-bench-")
	if err != nil {
		return nil, err
	}
	var nsNames []string
	defer func() {
		var errs []error
		for _, n := range nsNames {
			if derr := netns.Delete(n); derr != nil {
				errs = append(errs, derr)
			}
		}
		if rerr := os.RemoveAll(tmp); rerr != nil {
			errs = append(errs, rerr)
		}
		err = errors.Join(err, errors.Join(errs...))
	}()

	// podnet's plugin links, made by the binary itself.
	pnBin := filepath.Join(tmp, "podnet-bin")
	if out, err := exec.CommandContext(ctx, o.Podnet, "plugins", "install", "--dir", pnBin).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s plugins install: %v: %s", o.Podnet, err, out)
	}
	need := []string{"host-local", "loopback"}
	if o.Chain == ChainBridge {
		need = append(need, "bridge")
	}
	for _, n := range need {
		if _, err := os.Lstat(filepath.Join(pnBin, n)); err != nil {
			return nil, fmt.Errorf("%s provides no %q plugin yet (see `podnet plugins list`); use --chain %s meanwhile", o.Podnet, n, ChainHostLocal)
		}
	}

	pid := os.Getpid()
	impls := []*impl{
		{name: "reference", path: o.ReferenceDir},
		{name: "podnet", path: pnBin},
	}
	for i, im := range impls {
		dir := filepath.Join(tmp, im.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		im.nodeNS = fmt.Sprintf("pnb-node-%s-%d", im.name[:3], pid)
		nsNames = append(nsNames, im.nodeNS)
		nodePath, err := netns.Create(im.nodeNS)
		if err != nil {
			return nil, err
		}
		if err := loUp(nodePath); err != nil {
			return nil, err
		}
		im.cl = cniclient.New(cniclient.Config{
			Path:      []string{im.path},
			CacheDir:  filepath.Join(dir, "cache"),
			NodeNetns: nodePath,
		})
		if im.chain, err = libcni.ConfListFromBytes([]byte(chainConf(o.Chain, im.name, i, filepath.Join(dir, "ipam")))); err != nil {
			return nil, fmt.Errorf("chain config: %w", err)
		}
		if im.lo, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-lo-%s","plugins":[{"type":"loopback"}]}`, im.name))); err != nil {
			return nil, err
		}
	}
	impls[0].info = about(ctx, filepath.Join(impls[0].path, "bridge"))

	total := o.Warmup + o.Iterations
	for it := 0; it < total; it++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		timed := it >= o.Warmup
		order := impls
		if it%2 == 1 {
			order = []*impl{impls[1], impls[0]}
		}
		for _, im := range order {
			if err := im.iteration(ctx, it, timed, it == 0 && o.Chain == ChainBridge, &nsNames); err != nil {
				return nil, fmt.Errorf("%s, iteration %d: %w", im.name, it, err)
			}
		}
		if timed && (it-o.Warmup+1)%10 == 0 {
			fmt.Fprintf(o.Log, "bench: %d/%d iterations\n", it-o.Warmup+1, o.Iterations)
		}
	}

	rep = &Report{Chain: o.Chain, Iterations: o.Iterations, ReferenceDir: o.ReferenceDir, PodnetBin: o.Podnet}
	rep.Reference = impls[0].stats()
	rep.Podnet = impls[1].stats()
	rep.Floor = min(rep.Reference.Floor, rep.Podnet.Floor)
	return rep, nil
}

// iteration makes a pod netns, times ADD and DEL of the chain, then a
// loopback ADD (the floor), and removes the pod namespaces again.
func (im *impl) iteration(ctx context.Context, it int, timed, verify bool, nsNames *[]string) error {
	cid := fmt.Sprintf("pnbench-%d", it)
	pod, err := im.newPod(nsNames, fmt.Sprintf("pnb-pod-%s-%d-%d", im.name[:3], os.Getpid(), it))
	if err != nil {
		return err
	}
	att := cniclient.Attachment{ContainerID: cid, NetNS: pod, IfName: "eth0"}
	t0 := time.Now()
	res, aerr := im.cl.Add(ctx, im.chain, att)
	t1 := time.Now()
	if aerr == nil && verify {
		aerr = checkPod(pod, res)
		t1 = time.Now()
	}
	derr := im.cl.Del(ctx, im.chain, att)
	t2 := time.Now()
	if err := errors.Join(aerr, derr, im.dropPod(nsNames)); err != nil {
		return err
	}

	pod, err = im.newPod(nsNames, fmt.Sprintf("pnb-lo-%s-%d-%d", im.name[:3], os.Getpid(), it))
	if err != nil {
		return err
	}
	att = cniclient.Attachment{ContainerID: cid, NetNS: pod, IfName: "lo"}
	t3 := time.Now()
	_, aerr = im.cl.Add(ctx, im.lo, att)
	t4 := time.Now()
	derr = im.cl.Del(ctx, im.lo, att)
	if err := errors.Join(aerr, derr, im.dropPod(nsNames)); err != nil {
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
func (im *impl) newPod(nsNames *[]string, name string) (string, error) {
	p, err := netns.Create(name)
	if err != nil {
		return "", err
	}
	*nsNames = append(*nsNames, name)
	return p, nil
}

// dropPod deletes the most recently created pod namespace.
func (im *impl) dropPod(nsNames *[]string) error {
	n := len(*nsNames) - 1
	err := netns.Delete((*nsNames)[n])
	*nsNames = (*nsNames)[:n]
	return err
}

func (im *impl) stats() Stats {
	add, del := median(im.adds), median(im.dels)
	return Stats{
		Name:    im.name,
		About:   im.info,
		Add:     add,
		Del:     del,
		AddDel:  add + del,
		Floor:   median(im.floors),
		Samples: len(im.adds),
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

// chainConf is the network list timed for implementation number i: its own
// bridge, subnet and host-local data directory.
func chainConf(chain, name string, i int, dataDir string) string {
	ipam := fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.250.%d.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}`, dataDir, i+1)
	if chain == ChainHostLocal {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-%s","plugins":[{"type":"host-local","ipam":%s}]}`, name, ipam)
	}
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"pnb-%s","plugins":[{"type":"bridge","bridge":"pnb-br%d","isGateway":true,"ipMasq":true,"ipam":%s}]}`, name, i, ipam)
}

// checkPod makes sure the ADD really happened: the pod's eth0 carries the
// IPv4 address the result reports, so a plugin that does nothing cannot
// look fast.
func checkPod(pod string, r types.Result) error {
	res, err := current.GetResult(r)
	if err != nil {
		return err
	}
	if len(res.IPs) == 0 {
		return fmt.Errorf("ADD result has no IP: %v", r)
	}
	want := res.IPs[0].Address.IP
	return netns.Do(pod, func() error {
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

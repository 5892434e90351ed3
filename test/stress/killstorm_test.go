package stress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/roottest"
)

// errKilled marks a plugin process this test SIGKILLed.
var errKilled = errors.New("plugin process SIGKILLed by the test")

type planKey struct{}

// killPlan says which plugin exec of one chain operation to kill (0-based,
// -1 none) and when after its start.
type killPlan struct {
	victim int
	delay  time.Duration
	n      int
	killed bool
	where  string
}

// killExec is libcni's plugin executor: it starts each plugin in the node
// namespace and SIGKILLs the one the context's plan names.
type killExec struct {
	node string
	version.PluginDecoder
}

func (k *killExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (k *killExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	p, _ := ctx.Value(planKey{}).(*killPlan)
	cmd := exec.Command(path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cniclient.StartIn(k.node, cmd); err != nil {
		return nil, err
	}
	var timer *time.Timer
	if p != nil {
		if p.n == p.victim {
			timer = time.AfterFunc(p.delay, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		}
		p.n++
	}
	err := cmd.Wait()
	if timer != nil {
		timer.Stop()
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		p.killed = true
		p.where = filepath.Base(path) + " " + envOf(environ, "CNI_COMMAND")
		return nil, errKilled
	}
	if err != nil {
		e := &types.Error{}
		if json.Unmarshal(so.Bytes(), e) == nil && e.Code != 0 {
			return nil, e
		}
		return nil, fmt.Errorf("%s: %v: %s %s", path, err, so.String(), se.String())
	}
	return so.Bytes(), nil
}

func envOf(env []string, k string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, k+"="); ok {
			return v
		}
	}
	return ""
}

type storm struct {
	t      *testing.T
	node   string
	data   string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	rng    *rand.Rand
	rngMu  sync.Mutex
	mu     sync.Mutex
	live   map[string]string // address -> cid of attachments believed alive
	kills  int
	killAt map[string]int
	hist   map[string][]string // cid -> what happened to it
}

func (s *storm) note(cid string, p *killPlan, what string, err error) {
	e := what
	if p != nil && p.killed {
		e += fmt.Sprintf(" killed(%s +%v)", p.where, p.delay.Round(100*time.Microsecond))
	} else if err != nil {
		e += " error"
	} else {
		e += " ok"
	}
	s.mu.Lock()
	s.hist[cid] = append(s.hist[cid], e)
	s.mu.Unlock()
}

func (s *storm) rt(cid, ns string, i int) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: cid, NetNS: ns, IfName: "eth0", CapabilityArgs: map[string]any{
		"portMappings": []map[string]any{{"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"}},
		"bandwidth":    map[string]any{"ingressRate": 100000000, "ingressBurst": 10000000, "egressRate": 100000000, "egressBurst": 10000000},
	}}
}

func (s *storm) plan(killPct int) *killPlan {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	p := &killPlan{victim: -1}
	if s.rng.IntN(100) < killPct {
		p.victim = s.rng.IntN(4) // bridge, portmap, bandwidth, tuning (reverse order on DEL)
		switch s.rng.IntN(3) {
		case 0:
			p.delay = time.Duration(s.rng.Int64N(int64(2 * time.Millisecond))) // start-up
		case 1:
			p.delay = time.Duration(s.rng.Int64N(int64(15 * time.Millisecond)))
		default:
			p.delay = time.Duration(s.rng.Int64N(int64(60 * time.Millisecond)))
		}
	}
	return p
}

func (s *storm) count(p *killPlan) {
	if !p.killed {
		return
	}
	s.mu.Lock()
	s.kills++
	s.killAt[p.where]++
	s.mu.Unlock()
}

// del runs DEL until it succeeds, as a runtime retries it; the first
// attempts may be killed.
func (s *storm) del(cid, ns string, i int) {
	for attempt := 0; ; attempt++ {
		pct := 50
		if attempt > 3 {
			pct = 0
		}
		p := s.plan(pct)
		err := s.cni.DelNetworkList(context.WithValue(context.Background(), planKey{}, p), s.list, s.rt(cid, ns, i))
		s.count(p)
		s.note(cid, p, "DEL", err)
		if err == nil {
			return
		}
		if !p.killed {
			s.t.Errorf("DEL %s failed without a kill: %v", cid, err)
			if attempt > 6 {
				return
			}
		}
	}
}

type pod struct {
	cid, ns string
	i       int
	addrs   []string
}

// TestKillStorm: ADD and DEL of the full bridge chain (bridge+host-local,
// portmap, bandwidth, tuning) with plugin processes SIGKILLed at random,
// seeded instants; the runtime's recovery; then the node must hold exactly
// the state of the surviving pods, and they must answer pings.
func TestKillStorm(t *testing.T) {
	roottest.Require(t)
	if testing.Short() {
		t.Skip("kill storm")
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PODNET_KILL_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	target := 100
	if v := os.Getenv("PODNET_STRESS_KILLS"); v != "" {
		target, _ = strconv.Atoi(v)
	}
	t.Logf("seed %d (PODNET_KILL_SEED=%d to replay), target %d kills (PODNET_STRESS_KILLS)", seed, seed, target)

	_, node := roottest.NewNS(t, "node")
	data := t.TempDir()
	const netName = "storm"
	conflist := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[
		{"type":"bridge","bridge":"pnstorm0","isGateway":true,"ipMasq":false,
		 "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.93.0.0/20"}]]}},
		{"type":"portmap","capabilities":{"portMappings":true},"dataDir":%q},
		{"type":"bandwidth","capabilities":{"bandwidth":true}},
		{"type":"tuning","dataDir":%q,"sysctl":{"net.ipv4.conf.IFNAME.arp_ignore":"1"},"mtu":1400}]}`,
		netName, filepath.Join(data, "ipam"), filepath.Join(data, "portmap"), filepath.Join(data, "tuning"))
	list, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatal(err)
	}
	s := &storm{t: t, node: node, data: data, list: list, rng: rand.New(rand.NewPCG(seed, 99)),
		live: map[string]string{}, killAt: map[string]int{}, hist: map[string][]string{},
		cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(data, "cache"), &killExec{node: node})}

	// Calibration pod: what one attachment leaves in the node (nft
	// elements), and that the chain works unkilled.
	_, calNS := roottest.NewNS(t, "cal")
	if _, err := s.cni.AddNetworkList(context.Background(), list, s.rt("cal", calNS, 9999)); err != nil {
		t.Fatalf("calibration ADD: %v", err)
	}
	perPod := nftElems(t, node)
	if err := s.cni.DelNetworkList(context.Background(), list, s.rt("cal", calNS, 9999)); err != nil {
		t.Fatalf("calibration DEL: %v", err)
	}
	t.Logf("one attachment = %d portmap nft elements", perPod)

	var survivors []*pod
	// Pod namespaces are reused once their attachment is fully deleted,
	// which also checks that a successful DEL leaves no pod interface
	// behind (after a short wait for the asynchronous reaper).
	type freeNS struct{ ns, prev string }
	var free []freeNS
	var freeMu sync.Mutex
	getNS := func() string {
		for {
			freeMu.Lock()
			if len(free) == 0 {
				freeMu.Unlock()
				_, ns := roottest.NewNS(t, "pod")
				return ns
			}
			f := free[len(free)-1]
			free = free[:len(free)-1]
			freeMu.Unlock()
			left := podLink(t, f.ns, "eth0")
			for wait := time.Now().Add(3 * time.Second); left != "" && time.Now().Before(wait); {
				time.Sleep(50 * time.Millisecond)
				left = podLink(t, f.ns, "eth0")
			}
			if left == "" {
				return f.ns
			}
			s.mu.Lock()
			h := s.hist[f.prev]
			s.mu.Unlock()
			t.Errorf("after a successful DEL of %s its pod interface is still there 3s later: %s; history of %s: %v", f.prev, left, f.prev, h)
		}
	}
	putNS := func(ns, prev string) { freeMu.Lock(); free = append(free, freeNS{ns, prev}); freeMu.Unlock() }

	start := time.Now()
	deadline := start.Add(150 * time.Second)
	if target > 150 {
		deadline = start.Add(time.Duration(target) * time.Second)
	}
	next := 0
	var nextMu sync.Mutex
	var wg sync.WaitGroup
	var survMu sync.Mutex
	adds, addOK := 0, 0
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s.mu.Lock()
				done := s.kills >= target
				s.mu.Unlock()
				if done || time.Now().After(deadline) {
					return
				}
				nextMu.Lock()
				i := next
				next++
				nextMu.Unlock()
				p := &pod{cid: fmt.Sprintf("storm-%05d", i), ns: getNS(), i: i}
				plan := s.plan(70)
				res, err := s.cni.AddNetworkList(context.WithValue(context.Background(), planKey{}, plan), list, s.rt(p.cid, p.ns, i))
				s.count(plan)
				s.note(p.cid, plan, "ADD", err)
				s.mu.Lock()
				adds++
				s.mu.Unlock()
				if err != nil {
					if !plan.killed {
						t.Errorf("ADD %s failed without a kill: %v", p.cid, err)
					}
					s.del(p.cid, p.ns, i)
					putNS(p.ns, p.cid)
					continue
				}
				b, _ := json.Marshal(res)
				p.addrs, _ = resultAddrs(b)
				s.mu.Lock()
				addOK++
				for _, a := range p.addrs {
					if other, dup := s.live[a]; dup {
						t.Errorf("DUPLICATE: %s handed to %s while %s holds it", a, p.cid, other)
					}
					s.live[a] = p.cid
				}
				s.mu.Unlock()
				s.rngMu.Lock()
				keep := s.rng.IntN(100) < 35
				s.rngMu.Unlock()
				if keep {
					survMu.Lock()
					survivors = append(survivors, p)
					survMu.Unlock()
					continue
				}
				s.mu.Lock()
				for _, a := range p.addrs {
					delete(s.live, a)
				}
				s.mu.Unlock()
				s.del(p.cid, p.ns, i)
				putNS(p.ns, p.cid)
			}
		}()
	}
	wg.Wait()
	t.Logf("%v: %d ADDs (%d succeeded), %d kills, %d survivors; kills by plugin/verb: %v",
		time.Since(start).Round(time.Millisecond), adds, addOK, s.kills, len(survivors), s.killAt)
	if s.kills < target && !t.Failed() {
		t.Errorf("only %d kills landed before the time limit (target %d)", s.kills, target)
	}

	// The runtime's GC with the surviving attachments.
	var valid []types.GCAttachment
	for _, p := range survivors {
		valid = append(valid, types.GCAttachment{ContainerID: p.cid, IfName: "eth0"})
	}
	if err := s.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	s.checkNode(survivors, perPod)
	for _, p := range survivors {
		for _, a := range p.addrs {
			if _, err := probe.Ping(node, net.ParseIP(a), 3*time.Second); err != nil {
				t.Errorf("surviving pod %s (%s) does not answer ping from the node: %v", p.cid, a, err)
			}
		}
	}

	// Finally tear everything down: the node must be empty of this
	// network's state.
	for _, p := range survivors {
		s.del(p.cid, p.ns, p.i)
	}
	if err := s.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}); err != nil {
		t.Fatalf("final GC: %v", err)
	}
	s.checkNode(nil, perPod)
}

// checkNode asserts the node holds exactly the state of survivors.
func (s *storm) checkNode(survivors []*pod, perPod int) {
	t := s.t
	t.Helper()
	want := map[string]string{}
	wantCID := map[string]bool{}
	for _, p := range survivors {
		wantCID[p.cid] = true
		for _, a := range p.addrs {
			want[a] = p.cid
		}
	}
	// Reservations.
	dir := filepath.Join(s.data, "ipam", "storm")
	ents, _ := os.ReadDir(dir)
	got := map[string]bool{}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".tmp-") {
			t.Errorf("temp file %s left in the store", n)
		}
		if net.ParseIP(n) == nil {
			continue
		}
		got[n] = true
		b, _ := os.ReadFile(filepath.Join(dir, n))
		cid, _, _ := strings.Cut(string(b), "\r\n")
		if want[n] != cid {
			t.Errorf("reservation %s held by %q; surviving owner %q", n, cid, want[n])
		}
	}
	for a := range want {
		if !got[a] {
			t.Errorf("survivor's address %s is not reserved", a)
		}
	}
	// Tuning state.
	tdir := filepath.Join(s.data, "tuning", "storm")
	cents, _ := os.ReadDir(tdir)
	for _, e := range cents {
		if e.IsDir() && !wantCID[e.Name()] {
			files, _ := os.ReadDir(filepath.Join(tdir, e.Name()))
			if len(files) > 0 {
				t.Errorf("tuning state of dead attachment %s left: %v", e.Name(), names(files))
			}
		}
	}
	for cid := range wantCID {
		if _, err := os.Stat(filepath.Join(tdir, cid, "eth0.json")); err != nil {
			t.Errorf("tuning state of survivor %s missing: %v", cid, err)
		}
	}
	// Links (host veths may be reaped asynchronously: poll) and ifbs.
	var veths, ifbs, marked []string
	for wait := time.Now().Add(10 * time.Second); ; {
		veths, ifbs, marked = nodeLinks(t, s.node)
		if (len(veths) == len(survivors) && len(ifbs) == len(survivors) && len(marked) == 0) || time.Now().After(wait) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(veths) != len(survivors) || len(marked) != 0 {
		t.Errorf("node has %d host veths (%d marked for reaping: %v), want %d", len(veths), len(marked), marked, len(survivors))
	}
	if len(ifbs) != len(survivors) {
		t.Errorf("node has %d ifbs, want %d: %v", len(ifbs), len(survivors), ifbs)
	}
	// Portmap nftables elements.
	if n := nftElems(t, s.node); n != perPod*len(survivors) {
		t.Errorf("portmap table holds %d elements, want %d (%d per survivor)", n, perPod*len(survivors), perPod)
	}
}

func names(es []os.DirEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func nodeLinks(t *testing.T, node string) (veths, ifbs, marked []string) {
	ns, err := vnetns.GetFromPath(node)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := netlinkx.Retry(h.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		a := l.Attrs()
		switch l.Type() {
		case "veth":
			veths = append(veths, a.Name)
			if netlinkx.Marked(l) {
				marked = append(marked, a.Name)
			}
		case "ifb":
			ifbs = append(ifbs, a.Name+"("+a.Alias+")")
		}
	}
	sort.Strings(ifbs)
	return
}

// nftElems counts the elements of every set of portmap's table.
func nftElems(t *testing.T, node string) int {
	ns, err := vnetns.GetFromPath(node)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tb := range tables {
		if tb.Name != "podnet-portmap" {
			continue
		}
		sets, err := c.GetSets(tb)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sets {
			els, err := c.GetSetElements(st)
			if err != nil {
				t.Fatal(err)
			}
			n += len(els)
		}
	}
	return n
}

// podLink describes the link name in the pod namespace ns ("" if absent).
func podLink(t *testing.T, ns, name string) string {
	h, err := vnetns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(name)
	if err != nil {
		return ""
	}
	a := l.Attrs()
	return fmt.Sprintf("%s type %s flags %v alias %q peer-index %d", a.Name, l.Type(), a.Flags, a.Alias, a.ParentIndex)
}

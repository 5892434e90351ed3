package hostlocal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// The test binary doubles as the plugin: with childEnv set, TestMain runs
// Plugin.Main() (CNI_* environment + stdin) instead of the tests, so the
// process tests exec real, independent plugin processes.
const (
	childEnv       = "PODNET_HOSTLOCAL_TEST_CHILD"
	childJitterEnv = "PODNET_HOSTLOCAL_TEST_JITTER_SEED"
	childLoopEnv   = "PODNET_HOSTLOCAL_TEST_LOOP" // "ADD|DEL:prefix:count"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if s := os.Getenv(childJitterEnv); s != "" {
			seed, _ := strconv.ParseUint(s, 10, 64)
			rng := rand.New(rand.NewPCG(seed, 7))
			// Sleep up to 8ms between store steps so a SIGKILL can land
			// anywhere inside an operation, not just at process start.
			// Each step is reported on stderr first, so the test knows
			// where a killed process was.
			stepHook = func(s string) {
				_, _ = os.Stderr.WriteString(s + "\n")
				time.Sleep(time.Duration(rng.IntN(8000)) * time.Microsecond)
			}
		}
		if l := os.Getenv(childLoopEnv); l != "" {
			childLoop(l)
			os.Exit(0)
		}
		if e := Plugin.Main(); e != nil {
			_ = e.Print()
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childLoop runs count ADDs or DELs (container IDs prefix-NN, ifname eth0)
// one after the other in this process, each a separate Plugin call with its
// own lock, and prints "cid addr..." or "cid ERR message" per call.
func childLoop(spec string) {
	parts := strings.Split(spec, ":")
	count, _ := strconv.Atoi(parts[2])
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	for j := 0; j < count; j++ {
		args := cmdArgs(fmt.Sprintf("%s-%02d", parts[1], j), "eth0", stdin)
		if parts[0] == "DEL" {
			err = Plugin.Del(args)
			if err != nil {
				fmt.Printf("%s ERR %s\n", args.ContainerID, strings.ReplaceAll(err.Error(), "\n", " "))
			} else {
				fmt.Printf("%s OK\n", args.ContainerID)
			}
			continue
		}
		r, err := Plugin.Add(args)
		if err != nil {
			fmt.Printf("%s ERR %s\n", args.ContainerID, strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Printf("%s %s\n", args.ContainerID, strings.Join(resultAddrs(r.(*current.Result)), " "))
	}
}

func childCmd(t testing.TB, command, cid, ifname string, stdin []byte, jitter uint64) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CNI_") && !strings.HasPrefix(e, "PODNET_HOSTLOCAL_TEST_") && !strings.HasPrefix(e, "GORACE=") {
			env = append(env, e)
		}
	}
	// Under -race a process sleeps 1s at exit by default; children need not.
	env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	env = append(env, childEnv+"=1", "CNI_COMMAND="+command, "CNI_CONTAINERID="+cid, "CNI_IFNAME="+ifname,
		"CNI_NETNS=/var/run/netns/podnet-test", "CNI_NETNS_OVERRIDE=1", "CNI_PATH=/nonexistent")
	if jitter != 0 {
		env = append(env, fmt.Sprintf("%s=%d", childJitterEnv, jitter))
	}
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &bytes.Buffer{}
	cmd.Stderr = &bytes.Buffer{}
	return cmd
}

func parseAddrs(t testing.TB, out []byte) []string {
	t.Helper()
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("bad ADD output %q: %v", out, err)
	}
	var a []string
	for _, ip := range r.IPs {
		a = append(a, strings.Split(ip.Address, "/")[0])
	}
	return a
}

// TestConcurrentProcesses: 16 plugin processes at once, each doing 17 ADDs
// back to back (272 in all) on a /24 with 253 usable addresses. Exactly 253
// succeed, all distinct; the rest fail with the range-exhausted error. Then
// 16 processes DEL everything and the store is empty.
func TestConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("execs processes")
	}
	dir := t.TempDir()
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
	const workers, per = 16, 17
	run := func(command string) []string {
		var cmds []*exec.Cmd
		for w := 0; w < workers; w++ {
			cmd := childCmd(t, "", "", "", stdin, 0)
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%s:w%02d:%d", childLoopEnv, command, w, per))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		var lines []string
		for _, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%s worker: %v %s", command, err, cmd.Stderr)
			}
			lines = append(lines, strings.Split(strings.TrimSpace(cmd.Stdout.(*bytes.Buffer).String()), "\n")...)
		}
		if len(lines) != workers*per {
			t.Fatalf("%d result lines, want %d", len(lines), workers*per)
		}
		return lines
	}
	owner := map[string]string{}
	fails := 0
	for _, l := range run("ADD") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] == "ERR" {
			fails++
			if !strings.Contains(l, "no free address in range set 0") {
				t.Errorf("unexpected error: %s", l)
			}
			continue
		}
		if len(f) != 2 {
			t.Fatalf("bad line %q", l)
		}
		a := strings.Split(f[1], "/")[0]
		if prev, dup := owner[a]; dup {
			t.Errorf("DUPLICATE: %s given to %s and %s", a, prev, f[0])
		}
		owner[a] = f[0]
	}
	if len(owner) != 253 || fails != workers*per-253 {
		t.Fatalf("%d distinct successes, %d failures; want 253 and %d", len(owner), fails, workers*per-253)
	}
	res, _ := dirState(t, dir)
	if len(res) != 253 {
		t.Fatalf("store holds %d reservations", len(res))
	}
	for a, cid := range owner {
		if res[a] != cid+"\r\neth0" {
			t.Errorf("store %s = %q, ADD said %s", a, res[a], cid)
		}
	}
	for _, l := range run("DEL") {
		if !strings.HasSuffix(l, " OK") {
			t.Errorf("DEL: %s", l)
		}
	}
	res, _ = dirState(t, dir)
	if len(res) != 0 {
		t.Fatalf("after DELs the store holds %v", res)
	}
	assertNoTemps(t, dir)
}

// TestExecPerADD runs every ADD and DEL as its own process through
// Plugin.Main (the skel path a runtime uses), 16 at a time.
func TestExecPerADD(t *testing.T) {
	if testing.Short() {
		t.Skip("execs processes")
	}
	dir := t.TempDir()
	stdin := netconf(t, dir, map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.41"}}}}, nil)
	const n = 48 // 40 usable addresses
	var mu sync.Mutex
	owner := map[string]string{}
	fails := 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cid := fmt.Sprintf("e%02d", i)
			cmd := childCmd(t, "ADD", cid, "eth0", stdin, 0)
			err := cmd.Run()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
				if !strings.Contains(cmd.Stdout.(*bytes.Buffer).String(), "no free address") {
					t.Errorf("%s: %v %s", cid, err, cmd.Stdout)
				}
				return
			}
			for _, a := range parseAddrs(t, cmd.Stdout.(*bytes.Buffer).Bytes()) {
				if prev, dup := owner[a]; dup {
					t.Errorf("DUPLICATE: %s given to %s and %s", a, prev, cid)
				}
				owner[a] = cid
			}
		}(i)
	}
	wg.Wait()
	if len(owner) != 40 || fails != n-40 {
		t.Fatalf("%d successes, %d failures", len(owner), fails)
	}
	for i := 0; i < n; i++ {
		cmd := childCmd(t, "DEL", fmt.Sprintf("e%02d", i), "eth0", stdin, 0)
		if err := cmd.Run(); err != nil {
			t.Fatalf("DEL: %v %s", err, cmd.Stdout)
		}
	}
	if res, _ := dirState(t, dir); len(res) != 0 {
		t.Fatal(res)
	}
}

// TestKillDuringAdd SIGKILLs dual-stack ADD processes at random (seeded)
// instants. No successful ADD may ever report an address another
// successful ADD got; DEL of every container then GC must leave no
// reservation and no temp file.
func TestKillDuringAdd(t *testing.T) {
	if testing.Short() {
		t.Skip("execs and kills processes")
	}
	seed := uint64(20261125)
	if s := os.Getenv("PODNET_KILL_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set PODNET_KILL_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	ipam := map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "fd00::/120"}}}}
	stdin := netconf(t, dir, ipam, nil)

	// Calibrate: how long does an unkilled ADD take here?
	var lifetime time.Duration
	for i := 0; i < 3; i++ {
		cmd := childCmd(t, "ADD", fmt.Sprintf("cal%d", i), "eth0", stdin, uint64(i+1))
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("calibration ADD: %v %s", err, cmd.Stdout)
		}
		lifetime = max(lifetime, time.Since(start))
	}
	t.Logf("unkilled ADD takes up to %v", lifetime)

	const attempts, workers = 90, 8
	type plan struct {
		cid       string
		kill      bool
		afterLock bool
		delay     time.Duration
		jitter    uint64
	}
	plans := make([]plan, attempts)
	for i := range plans {
		// 60% are killed: a third of those at a random instant of the whole
		// process life, the rest at a random instant up to 40ms after the
		// process took the store lock (inside the operation).
		k := rng.IntN(100)
		plans[i] = plan{
			cid:       fmt.Sprintf("k%03d", i),
			kill:      k < 60,
			afterLock: k < 40,
			delay:     time.Duration(rng.Int64N(int64(lifetime))),
			jitter:    rng.Uint64() | 1,
		}
		if plans[i].afterLock {
			plans[i].delay = time.Duration(rng.Int64N(int64(40 * time.Millisecond)))
		}
	}
	var mu sync.Mutex
	kills := 0
	killedAt := map[string]int{} // last step reported before the kill
	got := map[string]string{}   // address -> cid, successful ADDs
	var cids []string
	for i := 0; i < 3; i++ {
		cids = append(cids, fmt.Sprintf("cal%d", i))
	}
	next := make(chan plan)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				cmd := childCmd(t, "ADD", p.cid, "eth0", stdin, p.jitter)
				cmd.Stderr = nil
				pipe, err := cmd.StderrPipe()
				if err != nil {
					t.Error(err)
					continue
				}
				if err := cmd.Start(); err != nil {
					t.Error(err)
					continue
				}
				kill := func() { _ = cmd.Process.Signal(syscall.SIGKILL) }
				var timer *time.Timer
				if p.kill && !p.afterLock {
					timer = time.AfterFunc(p.delay, kill)
				}
				// Read the child's step reports until it exits.
				var steps []string
				sc := bufio.NewScanner(pipe)
				for sc.Scan() {
					steps = append(steps, sc.Text())
					if sc.Text() == "locked" && p.kill && p.afterLock && timer == nil {
						timer = time.AfterFunc(p.delay, kill)
					}
				}
				err = cmd.Wait()
				if timer != nil {
					timer.Stop()
				}
				ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
				mu.Lock()
				cids = append(cids, p.cid)
				switch {
				case ws.Signaled():
					kills++
					last := "startup"
					if len(steps) > 0 {
						last = steps[len(steps)-1]
					}
					killedAt[last]++
				case err == nil:
					for _, a := range parseAddrs(t, cmd.Stdout.(*bytes.Buffer).Bytes()) {
						if prev, dup := got[a]; dup {
							t.Errorf("DUPLICATE: %s reported to %s and %s", a, prev, p.cid)
						}
						got[a] = p.cid
					}
				default:
					t.Errorf("%s failed without being killed: %v %s", p.cid, err, cmd.Stdout)
				}
				mu.Unlock()
			}
		}()
	}
	for _, p := range plans {
		next <- p
	}
	close(next)
	wg.Wait()
	t.Logf("%d processes killed, %d addresses from successful ADDs", kills, len(got))
	t.Logf("kills by last step reached: %v", killedAt)
	if kills < 35 {
		t.Errorf("only %d kills landed; the test is not exercising crashes", kills)
	}
	if inside := kills - killedAt["startup"]; inside < 20 {
		t.Errorf("only %d kills landed inside a store operation", inside)
	}

	// Every successful ADD's addresses are still reserved for it; every
	// other reservation belongs to a killed process.
	res, other := dirState(t, dir)
	for a, cid := range got {
		if res[a] != cid+"\r\neth0" {
			t.Errorf("%s: store says %q, ADD reported %s", a, res[a], cid)
		}
	}
	leftovers, temps := 0, 0
	for a := range res {
		if _, ok := got[a]; !ok {
			leftovers++
		}
	}
	for _, n := range other {
		if strings.HasPrefix(n, tmpPrefix) {
			temps++
		}
	}
	t.Logf("killed processes left %d reservations and %d temp files", leftovers, temps)

	for _, cid := range cids {
		if err := Plugin.Del(cmdArgs(cid, "eth0", stdin)); err != nil {
			t.Fatalf("DEL %s: %v", cid, err)
		}
	}
	if res, _ := dirState(t, dir); len(res) != 0 {
		t.Fatalf("after DELs: %v", res)
	}
	gc := netconf(t, dir, ipam, map[string]any{"cni.dev/valid-attachments": []any{}})
	if err := Plugin.GC(cmdArgs("", "", gc)); err != nil {
		t.Fatal(err)
	}
	res, other = dirState(t, dir)
	if len(res) != 0 {
		t.Fatal(res)
	}
	for _, n := range other {
		if n != lockFile && !strings.HasPrefix(n, cursorPrefix) {
			t.Fatalf("left in %s: %v", filepath.Join(dir, testNet), other)
		}
	}
}

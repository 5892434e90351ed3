// Package hostile runs the real podnet binary, as a runtime would, with
// input that tries to break out of the plugin's own directories or to
// exhaust it: path-escaping network names, container IDs, interface names
// and dataDirs; overlong and odd interface names; huge and deeply nested
// configs. Each must give a clear CNI error (the spec's code, a message
// naming the field) and write nothing outside the plugin's data dirs,
// which all live under the test's temp dir. It also checks the modes of
// the state podnet writes (files 0600, directories 0700).
//
// Nothing here touches the root network namespace: the cases that need a
// kernel object run in namespaces made with roottest.
package hostile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/roottest"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podnet-hostile-")
	if err != nil {
		panic(err)
	}
	bin := filepath.Join(dir, "podnet")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/podnet").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	if out, err := exec.Command(bin, "plugins", "install", "--dir", dir).CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type call struct {
	typ, cmd string
	stdin    []byte
	cid      string
	ifname   string
	netns    string
	node     string // run the plugin inside this network namespace
	extraEnv []string
}

type outcome struct {
	stdout  []byte
	err     error
	elapsed time.Duration
}

func run(t *testing.T, c call) outcome {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, c.typ))
	if c.cid == "" {
		c.cid = "ctr1"
	}
	if c.ifname == "" {
		c.ifname = "eth0"
	}
	if c.netns == "" {
		c.netns = "/var/run/netns/podnet-hostile-none"
	}
	cmd.Env = append([]string{"CNI_COMMAND=" + c.cmd, "CNI_CONTAINERID=" + c.cid, "CNI_NETNS=" + c.netns,
		"CNI_IFNAME=" + c.ifname, "CNI_PATH=" + binDir, "PATH=/usr/bin:/bin"}, c.extraEnv...)
	cmd.Stdin = bytes.NewReader(c.stdin)
	var so bytes.Buffer
	cmd.Stdout = &so
	start := time.Now()
	if c.node == "" && c.typ != "host-local" && c.typ != "static" {
		t.Fatalf("%s may touch the kernel: run it in a test namespace (node)", c.typ)
	}
	err := cniclient.RunIn(c.node, cmd)
	return outcome{so.Bytes(), err, time.Since(start)}
}

// wantErr asserts a CNI error JSON with the code and a message containing
// every string in has (case-insensitive).
func wantErr(t *testing.T, o outcome, code uint, has ...string) {
	t.Helper()
	if o.err == nil {
		t.Fatalf("expected a CNI error, got success: %.300s", o.stdout)
	}
	var e struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(o.stdout, &e); err != nil {
		t.Fatalf("output is not CNI error JSON (%v): %.300q", o.err, o.stdout)
	}
	if e.Code != code {
		t.Fatalf("code %d (%s | %s), want %d", e.Code, e.Msg, e.Details, code)
	}
	all := strings.ToLower(e.Msg + " " + e.Details)
	for _, h := range has {
		if !strings.Contains(all, strings.ToLower(h)) {
			t.Fatalf("message %q (details %q) does not name %q", e.Msg, e.Details, h)
		}
	}
}

// tree lists every path under root (relative), for "nothing written
// elsewhere" checks.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// onlyUnder fails unless every path of the tree of root is inside one of
// the allowed prefixes (relative to root).
func onlyUnder(t *testing.T, root string, allowed ...string) {
	t.Helper()
	for _, p := range tree(t, root) {
		ok := false
		for _, a := range allowed {
			if p == a || strings.HasPrefix(p, a+"/") || strings.HasPrefix(a, p+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s was written outside %v", filepath.Join(root, p), allowed)
		}
	}
}

func hostLocal(name, dataDir string, extra map[string]any) []byte {
	ipam := map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": [][]map[string]string{{{"subnet": "10.77.0.0/24"}}}}
	m := map[string]any{"cniVersion": "1.1.0", "name": name, "type": "bridge", "ipam": ipam}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

var escapingNames = []string{"../../etc", "..", ".", "a/b", "/abs", "/", "a\x00b", "a\nb", "a b", " lead", strings.Repeat("n", 300), "-x", ""}

// TestHostLocalNames: a network name that is not a plain identifier is a
// code-7 error naming "name", for every verb that touches the store, and
// nothing appears outside dataDir (which itself stays empty).
func TestHostLocalNames(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data", "d1")
	for _, n := range escapingNames {
		for _, verb := range []string{"ADD", "DEL", "CHECK", "GC", "STATUS"} {
			t.Run(fmt.Sprintf("%s/%q", verb, n), func(t *testing.T) {
				wantErr(t, run(t, call{typ: "host-local", cmd: verb, stdin: hostLocal(n, data, nil)}), 7, "name")
			})
		}
	}
	if got := tree(t, root); len(got) != 0 {
		t.Fatalf("rejected configs left %v", got)
	}
}

// TestHostLocalDataDir: a relative dataDir is refused (code 7, "dataDir");
// an absolute one with ".." is cleaned and used as the operator wrote it.
func TestHostLocalDataDir(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"relative", "../up", "./here", "", "a/../../b"} {
		if d == "" {
			continue // empty means the default /var/lib/cni/networks; not exercised here
		}
		for _, verb := range []string{"ADD", "DEL", "GC", "STATUS"} {
			t.Run(fmt.Sprintf("%s/%q", verb, d), func(t *testing.T) {
				o := run(t, call{typ: "host-local", cmd: verb, stdin: hostLocal("net1", d, nil)})
				wantErr(t, o, 7, `"dataDir"`)
			})
		}
	}
	// NUL inside an absolute dataDir: the kernel refuses the path; the
	// error is an I/O error naming the directory, and nothing is created.
	o := run(t, call{typ: "host-local", cmd: "ADD", stdin: hostLocal("net1", root+"/x\x00y", nil)})
	if o.err == nil {
		t.Fatalf("dataDir with NUL accepted: %s", o.stdout)
	}
	wantErr(t, o, 5, "reservation directory")
	// An absolute path with ".." is the operator's choice; it is cleaned
	// and the reservation lands exactly there.
	o = run(t, call{typ: "host-local", cmd: "ADD", stdin: hostLocal("net1", root+"/a/b/../c", nil)})
	if o.err != nil {
		t.Fatalf("ADD: %v %s", o.err, o.stdout)
	}
	onlyUnder(t, root, "a/c/net1")
	assertModes(t, filepath.Join(root, "a"))
}

// TestContainerIDAndIfName: the runtime-supplied identifiers that end up in
// file names or file content are checked before anything is written.
// (NUL cannot be passed in an environment variable at all.)
func TestContainerIDAndIfName(t *testing.T) {
	root := t.TempDir()
	conf := hostLocal("net1", filepath.Join(root, "data"), nil)
	for _, cid := range []string{"../../etc/passwd", "a/b", "/abs", "a\nb", "a b", ".", "..", "-x", strings.Repeat("c", 2000)} {
		for _, verb := range []string{"ADD", "DEL", "CHECK"} {
			t.Run(fmt.Sprintf("cid/%s/%.20q", verb, cid), func(t *testing.T) {
				wantErr(t, run(t, call{typ: "host-local", cmd: verb, stdin: conf, cid: cid}), 4, "container")
			})
		}
	}
	for _, ifn := range []string{"eth0eth0eth0eth0x", strings.Repeat("i", 300), "a/b", "a:b", "a b", " ", ".", "..", "eth0\n", "tab\t", "éth0"} {
		for _, verb := range []string{"ADD", "DEL", "CHECK"} {
			t.Run(fmt.Sprintf("ifname/%s/%.20q", verb, ifn), func(t *testing.T) {
				wantErr(t, run(t, call{typ: "host-local", cmd: verb, stdin: conf, ifname: ifn}), 4, "interface name")
			})
		}
	}
	if got := tree(t, root); len(got) != 0 {
		t.Fatalf("rejected calls left %v", got)
	}
}

// TestPluginFieldsEscaping: the other plugins that keep files (tuning,
// portmap) refuse escaping names and relative dataDirs before touching the
// disk; bridge refuses bridge names that are not interface names.
func TestPluginFieldsEscaping(t *testing.T) {
	_, node := roottest.NewNS(t, "hesc") // skips unless root
	root := t.TempDir()
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"interface":0,"address":"10.1.0.5/24"}]}`
	conf := func(typ, name, dataDir, extra string) []byte {
		s := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":%q,"dataDir":%q,"prevResult":%s`, name, typ, dataDir, prev)
		if extra != "" {
			s += "," + extra
		}
		return []byte(s + "}")
	}
	data := filepath.Join(root, "data")
	// A sentinel the tuning GC would sweep if the name escaped dataDir:
	// <root>/x/<cid>/<ifname>.json is exactly the shape of a state file.
	sentinel := filepath.Join(root, "x", "victim", "eth0.json")
	if err := os.MkdirAll(filepath.Dir(sentinel), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sentinel, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"../x", "../../etc", "a/b", "..", ".", "/abs", "a\nb"} {
		for _, verb := range []string{"ADD", "DEL", "GC", "CHECK"} {
			t.Run(fmt.Sprintf("tuning/%s/%q", verb, n), func(t *testing.T) {
				wantErr(t, run(t, call{typ: "tuning", cmd: verb, node: node, stdin: conf("tuning", n, data, `"mtu":1400`)}), 7, "name")
			})
		}
	}
	for _, d := range []string{"relative", "../up", "./x"} {
		for _, verb := range []string{"ADD", "DEL", "GC"} {
			t.Run(fmt.Sprintf("tuning-dataDir/%s/%q", verb, d), func(t *testing.T) {
				wantErr(t, run(t, call{typ: "tuning", cmd: verb, node: node, stdin: conf("tuning", "net1", d, `"mtu":1400`)}), 7, `"dataDir"`)
			})
			t.Run(fmt.Sprintf("portmap-dataDir/%s/%q", verb, d), func(t *testing.T) {
				wantErr(t, run(t, call{typ: "portmap", cmd: verb, node: node, stdin: conf("portmap", "net1", d, `"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}`)}), 7, `"dataDir"`)
			})
		}
	}
	for _, br := range []string{"../br", "a/b", "br:0", "br 0", ".", "..", strings.Repeat("b", 16), ""} {
		if br == "" {
			continue // empty means the default cni0
		}
		t.Run(fmt.Sprintf("bridge/%q", br), func(t *testing.T) {
			s := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net1","type":"bridge","bridge":%q,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.78.0.0/24"}}`, br, data)
			wantErr(t, run(t, call{typ: "bridge", cmd: "ADD", node: node, stdin: []byte(s)}), 7, `"bridge"`)
		})
	}
	if _, err := os.Stat(sentinel); err != nil {
		t.Fatalf("sentinel outside dataDir was removed: %v", err)
	}
	onlyUnder(t, root, "x/victim/eth0.json")
}

// TestHugeConfigs: configs of 10 MB, 100k ranges, 100k routes and deeply
// nested JSON finish within seconds with a result or a clear error.
func TestHugeConfigs(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	limit := 20 * time.Second
	if testing.Short() {
		t.Skip("huge inputs")
	}

	t.Run("10MB padding", func(t *testing.T) {
		b := hostLocal("net1", data, map[string]any{"padding": strings.Repeat("x", 10<<20)})
		o := run(t, call{typ: "host-local", cmd: "ADD", stdin: b})
		if o.err != nil {
			t.Fatalf("10 MB config with an unknown field must work: %v %s", o.err, o.stdout)
		}
		t.Logf("10 MB config: %v", o.elapsed)
		if o.elapsed > limit {
			t.Errorf("took %v", o.elapsed)
		}
		run(t, call{typ: "host-local", cmd: "DEL", stdin: b})
	})

	t.Run("100k ranges", func(t *testing.T) {
		var set [][]map[string]string
		for i := 0; i < 100000; i++ {
			set = append(set, []map[string]string{{"subnet": fmt.Sprintf("10.%d.%d.0/30", i/256%256, i%256), "rangeStart": "", "gateway": ""}})
			set[i][0]["subnet"] = fmt.Sprintf("%d.%d.%d.0/30", 10+i/65536, i/256%256, i%256)
			delete(set[i][0], "rangeStart")
			delete(set[i][0], "gateway")
		}
		ipam := map[string]any{"type": "host-local", "dataDir": data, "ranges": set}
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "big", "type": "bridge", "ipam": ipam})
		t.Logf("config is %d bytes", len(b))
		o := run(t, call{typ: "host-local", cmd: "STATUS", stdin: b})
		if o.err != nil {
			t.Fatalf("STATUS: %v %s", o.err, o.stdout)
		}
		// CHECK parses and validates every range (overlaps included), then
		// fails on the missing prevResult: the parse is what is timed.
		o = run(t, call{typ: "host-local", cmd: "CHECK", stdin: b})
		t.Logf("100k range sets, CHECK: %v", o.elapsed)
		wantErr(t, o, 7, "prevResult")
		if o.elapsed > limit {
			t.Errorf("100k ranges took %v", o.elapsed)
		}
		// Overlap found among 100k ranges (the last one overlaps the first).
		set = append(set, []map[string]string{{"subnet": "10.0.0.0/29"}})
		ipam["ranges"] = set
		bo, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "big", "type": "bridge", "ipam": ipam})
		o = run(t, call{typ: "host-local", cmd: "ADD", stdin: bo})
		wantErr(t, o, 7, `"ranges[100000][0]"`, "overlaps")
		if o.elapsed > limit {
			t.Errorf("overlap among 100k ranges took %v", o.elapsed)
		}
		set = set[:len(set)-1]
		// The same 100k ranges in one range set: one address.
		ipam["ranges"] = [][]map[string]string{flatten(set)}
		b, _ = json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "big1", "type": "bridge", "ipam": ipam})
		o = run(t, call{typ: "host-local", cmd: "ADD", stdin: b})
		t.Logf("1 set of 100k ranges: %v (%v) %.200s", o.elapsed, o.err, o.stdout)
		if o.err != nil {
			t.Errorf("one set of 100k ranges: %v %s", o.err, o.stdout)
		}
		if o.elapsed > limit {
			t.Errorf("100k ranges in one set took %v", o.elapsed)
		}
	})

	t.Run("100k routes", func(t *testing.T) {
		var routes []map[string]string
		for i := 0; i < 100000; i++ {
			routes = append(routes, map[string]string{"dst": fmt.Sprintf("%d.%d.%d.0/24", 11+i/65536, i/256%256, i%256)})
		}
		ipam := map[string]any{"type": "host-local", "dataDir": data, "subnet": "10.79.0.0/24", "routes": routes}
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "routes", "type": "bridge", "ipam": ipam})
		o := run(t, call{typ: "host-local", cmd: "ADD", stdin: b})
		t.Logf("100k routes: %v (%v)", o.elapsed, o.err)
		if o.err != nil || o.elapsed > limit {
			t.Errorf("100k routes: %v in %v", o.err, o.elapsed)
		}
	})

	node := ""
	if os.Geteuid() == 0 {
		_, node = roottest.NewNS(t, "hhuge")
	}
	for _, typ := range []string{"host-local", "static", "bridge", "ptp", "macvlan", "tap", "host-device", "portmap", "firewall", "bandwidth", "tuning", "sbr", "loopback"} {
		if node == "" && typ != "host-local" && typ != "static" {
			continue // the others may touch the kernel: only in a test namespace, as root
		}
		t.Run("nested/"+typ, func(t *testing.T) {
			depth := 200000
			b := []byte(`{"cniVersion":"1.1.0","name":"n","type":"` + typ + `","ipam":{"type":"` + typ + `","dataDir":"` + data + `"},"x":` +
				strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`)
			o := run(t, call{typ: typ, cmd: "ADD", node: node, stdin: b})
			if o.elapsed > limit {
				t.Errorf("took %v", o.elapsed)
			}
			// Go's "invalid character '[' exceeded max depth" says
			// nothing a user can act on: the message names the nesting.
			wantErr(t, o, 6, typ+": config: JSON nested more than 10000 levels deep", "remove the nesting")
		})
		t.Run("nested-prevResult/"+typ, func(t *testing.T) {
			depth := 5000 // below encoding/json's limit: must decode, then be refused or ignored
			b := []byte(`{"cniVersion":"1.1.0","name":"n","type":"` + typ + `","ipam":{"type":"` + typ + `","dataDir":"` + data + `"},"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.1/24","x":` +
				strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}]}}`)
			o := run(t, call{typ: typ, cmd: "ADD", node: node, stdin: b})
			if o.elapsed > limit {
				t.Errorf("took %v", o.elapsed)
			}
			if o.err != nil {
				var e struct{ Code uint }
				if json.Unmarshal(o.stdout, &e) != nil || e.Code == 0 {
					t.Fatalf("not a CNI error: %.300s", o.stdout)
				}
			}
		})
	}
	onlyUnder(t, root, "data")
}

func flatten(s [][]map[string]string) []map[string]string {
	var out []map[string]string
	for _, x := range s {
		out = append(out, x...)
	}
	return out
}

// assertModes: every directory under root that podnet created is 0700 and
// every file 0600.
func assertModes(t *testing.T, root string) {
	t.Helper()
	n := 0
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, info.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if n == 0 {
		t.Errorf("nothing under %s to check", root)
	}
}

// TestHostLocalModes: the reservation directory is 0700 and every file in
// it (lock, reservations, cursors) 0600, whatever the umask.
func TestHostLocalModes(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	b := hostLocal("net1", data, nil)
	b6, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "net1", "type": "bridge",
		"ipam": map[string]any{"type": "host-local", "dataDir": data, "ranges": [][]map[string]string{{{"subnet": "10.77.0.0/24"}}, {{"subnet": "fd77::/120"}}}}})
	for i, c := range [][]byte{b, b6} {
		cmd := exec.Command("sh", "-c", "umask 0; exec \"$0\"", filepath.Join(binDir, "host-local"))
		cmd.Env = []string{"CNI_COMMAND=ADD", fmt.Sprintf("CNI_CONTAINERID=c%d", i), "CNI_NETNS=/x", "CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
		cmd.Stdin = bytes.NewReader(c)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ADD: %v %s", err, out)
		}
	}
	assertModes(t, data)
}

package tuning

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podnet/podnet/test/fuzzcheck"
)

// FuzzParseConfig: any stdin, ifname and CNI_ARGS give a spec-coded error
// naming tuning, or sysctls confined to net/ (no empty, "." or ".." path
// component, no newline or NUL in a value), a unicast MAC and bounded MTU,
// and a state directory inside dataDir.
func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		`"sysctl":{"net.core.somaxconn":"500","net.ipv4.conf.IFNAME.rp_filter":"2","net/ipv4/conf/eth0.5/forwarding":"1"},"mac":"0a:00:00:00:00:01","mtu":1400,"promisc":true,"allmulti":false,"txQLen":0`,
		`"args":{"cni":{"sysctl":{"net.ipv4.conf.IFNAME.arp_ignore":"1"},"mac":"02:00:00:00:00:05","mtu":9000,"txQLen":5,"promisc":false}},"runtimeConfig":{"mac":"02:00:00:00:00:06"}`,
		`"sysctl":{"kernel.panic":"1"}`, `"sysctl":{"net/../../kernel/x":"1"}`, `"sysctl":{"net.a":"1","net/a":"2"}`,
		`"sysctl":{"net.a":1}`, `"sysctl":[]`, `"mtu":70000`, `"mac":"01:00:00:00:00:00"`, `"dataDir":"relative"`,
	}
	for _, s := range seeds {
		for _, a := range []string{"", "MAC=02:00:00:00:00:09", "IgnoreUnknown=1;K8S_POD_NAME=x", "MAC", "=;;"} {
			f.Add(fuzzcheck.Conf("tuning", "1.1.0", s, fuzzcheck.PrevResults[6]), "eth0", a)
		}
	}
	f.Add([]byte(`{"name":"../../etc","type":"tuning"}`), "..", "")
	f.Fuzz(func(t *testing.T, stdin []byte, ifName, cniArgs string) {
		c, err := ParseConfig(stdin, ifName, cniArgs)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		for _, s := range c.Sysctls {
			parts := strings.Split(s.Key, "/")
			if parts[0] != "net" || len(parts) < 2 || strings.ContainsAny(s.Value, "\n\x00") {
				t.Fatalf("sysctl %+v accepted", s)
			}
			for _, p := range parts {
				if p == "" || p == "." || p == ".." {
					t.Fatalf("sysctl %+v accepted", s)
				}
			}
		}
		if c.Mac != nil && (len(c.Mac) != 6 || c.Mac[0]&1 != 0) {
			t.Fatalf("mac %s", c.Mac)
		}
		if c.MTU < 0 || c.MTU > maxMTU || (c.TxQLen != nil && *c.TxQLen < 0) {
			t.Fatalf("accepted %+v", c)
		}
		if d := netDir(c.DataDir, c.Network); filepath.Dir(d) != c.DataDir {
			t.Fatalf("state dir %q outside dataDir %q", d, c.DataDir)
		}
	})
}

// FuzzStateDir plants a state file with any content and stray entries in a
// network's state directory: load reports a corrupt file as an error,
// never a panic; GC with a valid list keeps exactly the valid attachment's
// file and removes the others and every temp file, all inside the dir.
func FuzzStateDir(f *testing.F) {
	f.Add("c1", "eth0", `{"containerID":"c1","ifname":"eth0","sysctls":[{"key":"net/ipv4/ip_forward","value":"0"}],"link":{"mtu":1500}}`, ".tmp-x", true)
	f.Add("c1", "eth0", `{"containerID":1}`, "stray.json", false)
	f.Add("c2", "net1", "\x00garbage", "c3", true)
	f.Add("c..", "e", `null`, "..json", false)
	f.Fuzz(func(t *testing.T, cid, ifn, content, stray string, strayDir bool) {
		ok := func(s string) bool {
			return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && len(s) < 100
		}
		if !ok(cid) || !ok(ifn) || !ok(stray) {
			return
		}
		base := t.TempDir()
		data := filepath.Join(base, "data")
		st, err := openStore(data, "net1", true)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := os.MkdirAll(filepath.Join(st.dir, cid), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(st.path(cid, ifn), []byte(content), 0o600); err != nil {
			return
		}
		if strayDir {
			_ = os.MkdirAll(filepath.Join(st.dir, stray), 0o700)
			_ = os.WriteFile(filepath.Join(st.dir, stray, ".tmp-zz"), nil, 0o600)
			_ = os.WriteFile(filepath.Join(st.dir, stray, "other.json"), []byte("{}"), 0o600)
		} else {
			_ = os.WriteFile(filepath.Join(st.dir, cid, stray), []byte(content), 0o600)
		}
		if s, err := st.load(cid, ifn); err == nil && s == nil {
			t.Fatal("state file present but load returned nothing")
		}
		// A sentinel outside the data dir must survive everything.
		sentinel := filepath.Join(base, "sentinel.json")
		if err := os.WriteFile(sentinel, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := st.gc(map[[2]string]bool{{cid, ifn}: true}); err != nil {
			t.Logf("gc: %v", err)
		}
		if _, err := os.Stat(st.path(cid, ifn)); err != nil {
			t.Fatalf("gc removed the valid attachment's state: %v", err)
		}
		if _, err := os.Stat(sentinel); err != nil {
			t.Fatalf("gc removed a file outside the data dir: %v", err)
		}
		filepath.WalkDir(st.dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
				t.Fatalf("temp file %s survived gc", p)
			}
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") && p != st.path(cid, ifn) {
				t.Fatalf("gc kept %s, which is no valid attachment's", p)
			}
			return nil
		})
	})
}

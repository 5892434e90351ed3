package hostlocal

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cnierr"
)

func TestAddDelRoundRobinAndFormat(t *testing.T) {
	dir := t.TempDir()
	stdin := netconf(t, dir, map[string]any{"subnet": "10.0.0.0/29"}, nil)
	r1 := addOK(t, cmdArgs("c1", "eth0", stdin))
	r2 := addOK(t, cmdArgs("c2", "eth0", stdin))
	if a, b := resultAddrs(r1), resultAddrs(r2); a[0] != "10.0.0.2/29" || b[0] != "10.0.0.3/29" {
		t.Fatal(a, b)
	}
	if r1.IPs[0].Gateway.String() != "10.0.0.1" {
		t.Fatal(r1.IPs[0].Gateway)
	}
	res, other := dirState(t, dir)
	if !reflect.DeepEqual(res, map[string]string{"10.0.0.2": "c1\r\neth0", "10.0.0.3": "c2\r\neth0"}) {
		t.Fatalf("%q", res)
	}
	if !reflect.DeepEqual(other, []string{"last_reserved_ip.0", "lock"}) {
		t.Fatal(other)
	}
	b, _ := os.ReadFile(filepath.Join(dir, testNet, "last_reserved_ip.0"))
	if string(b) != "10.0.0.3" {
		t.Fatalf("cursor %q", b)
	}
	for _, p := range []string{filepath.Join(dir, testNet), filepath.Join(dir, testNet, "10.0.0.2")} {
		st, _ := os.Stat(p)
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			t.Fatalf("%s mode %v", p, perm)
		}
	}
	// Release c1; round robin continues after .3 rather than reusing .2.
	if err := Plugin.Del(cmdArgs("c1", "eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	r3 := addOK(t, cmdArgs("c3", "eth0", stdin))
	if a := resultAddrs(r3); a[0] != "10.0.0.4/29" {
		t.Fatal(a)
	}
	// A second ADD for the same attachment is refused.
	_, err := Plugin.Add(cmdArgs("c3", "eth0", stdin))
	wantErr(t, err, cnierr.Internal, "already holds 10.0.0.4")
	// Same container, other interface is a different attachment.
	addOK(t, cmdArgs("c3", "net1", stdin))
}

func TestDelTwiceAndMissingDir(t *testing.T) {
	dir := t.TempDir()
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
	// DEL before anything exists: ok, and creates nothing.
	if err := Plugin.Del(cmdArgs("c1", "eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, testNet)); !os.IsNotExist(err) {
		t.Fatal("DEL created the network dir")
	}
	addOK(t, cmdArgs("c1", "eth0", stdin))
	addOK(t, cmdArgs("c2", "eth0", stdin))
	for i := 0; i < 2; i++ {
		if err := Plugin.Del(cmdArgs("c1", "eth0", stdin)); err != nil {
			t.Fatal(err)
		}
	}
	res, _ := dirState(t, dir)
	if len(res) != 1 || res["10.0.0.3"] != "c2\r\neth0" {
		t.Fatal(res)
	}
	// DEL with a config whose ranges are broken still releases.
	broken := netconf(t, dir, v4Ranges("10.0.0.0/33"), nil)
	if err := Plugin.Del(cmdArgs("c2", "eth0", broken)); err != nil {
		t.Fatal(err)
	}
	if res, _ := dirState(t, dir); len(res) != 0 {
		t.Fatal(res)
	}
}

func gcConf(t *testing.T, dir string, valid ...[2]string) []byte {
	va := []map[string]string{}
	for _, v := range valid {
		va = append(va, map[string]string{"containerID": v[0], "ifname": v[1]})
	}
	return netconf(t, dir, v4Ranges("10.0.0.0/24"), map[string]any{"cni.dev/valid-attachments": va})
}

func TestGC(t *testing.T) {
	dir := t.TempDir()
	// GC with no directory is fine.
	if err := Plugin.GC(cmdArgs("", "", gcConf(t, dir))); err != nil {
		t.Fatal(err)
	}
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
	addOK(t, cmdArgs("keep", "eth0", stdin))
	addOK(t, cmdArgs("keep", "net1", stdin))
	addOK(t, cmdArgs("stale", "eth0", stdin))
	nd := filepath.Join(dir, testNet)
	// Leftovers of a crashed process: temp files, a legacy file, an empty
	// file from a crashed reference plugin.
	for n, c := range map[string]string{".tmp-res-123": "stale2\r\neth0", ".tmp-cur-9": "10.0.0", "10.0.0.50": "legacykeep", "10.0.0.51": "legacygone", "10.0.0.52": ""} {
		if err := os.WriteFile(filepath.Join(nd, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := Plugin.GC(cmdArgs("", "", gcConf(t, dir, [2]string{"keep", "eth0"}, [2]string{"legacykeep", "eth0"}))); err != nil {
		t.Fatal(err)
	}
	res, other := dirState(t, dir)
	if !reflect.DeepEqual(res, map[string]string{"10.0.0.2": "keep\r\neth0", "10.0.0.50": "legacykeep"}) {
		t.Fatalf("%q", res)
	}
	if !reflect.DeepEqual(other, []string{"last_reserved_ip.0", "lock"}) {
		t.Fatal(other)
	}
	// A null list (libcni's encoding of an empty one) and the old key name
	// are understood: here the old key keeps keep/eth0 only.
	if err := Plugin.GC(cmdArgs("", "", netconf(t, dir, v4Ranges("10.0.0.0/24"), map[string]any{"cni.dev/attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}}}))); err != nil {
		t.Fatal(err)
	}
	if res, _ := dirState(t, dir); len(res) != 1 || res["10.0.0.2"] == "" {
		t.Fatal(res)
	}
	// No list at all (libcni without GCArgs, as cnitool gc sends it) means
	// nothing is valid, as in the reference plugin.
	if err := Plugin.GC(cmdArgs("", "", netconf(t, dir, v4Ranges("10.0.0.0/24"), nil))); err != nil {
		t.Fatal(err)
	}
	if res, _ := dirState(t, dir); len(res) != 0 {
		t.Fatal(res)
	}
	// Empty valid list: everything goes.
	if err := Plugin.GC(cmdArgs("", "", gcConf(t, dir))); err != nil {
		t.Fatal(err)
	}
	if res, _ := dirState(t, dir); len(res) != 0 {
		t.Fatal(res)
	}
}

func TestExhaustionLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	// Two addresses: .2 and .3 (gateway .1 skipped).
	ipam := map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/29", "rangeEnd": "10.0.0.3"}}}}
	stdin := netconf(t, dir, ipam, nil)
	addOK(t, cmdArgs("c1", "eth0", stdin))
	addOK(t, cmdArgs("c2", "eth0", stdin))
	_, err := Plugin.Add(cmdArgs("c3", "eth0", stdin))
	wantErr(t, err, cnierr.Internal, "no free address in range set 0 (subnet 10.0.0.0/29)")
	res, _ := dirState(t, dir)
	if len(res) != 2 {
		t.Fatal(res)
	}
	for _, c := range res {
		if strings.HasPrefix(c, "c3") {
			t.Fatal(res)
		}
	}
	assertNoTemps(t, dir)
}

func TestDualStackRollback(t *testing.T) {
	dir := t.TempDir()
	ipam := map[string]any{"ranges": [][]map[string]string{
		{{"subnet": "10.0.0.0/24"}},
		{{"subnet": "fd00::/120", "rangeStart": "fd00::5", "rangeEnd": "fd00::5"}},
	}}
	stdin := netconf(t, dir, ipam, nil)
	r := addOK(t, cmdArgs("c1", "eth0", stdin))
	if got := resultAddrs(r); !reflect.DeepEqual(got, []string{"10.0.0.2/24", "fd00::5/120"}) {
		t.Fatal(got)
	}
	// v4 succeeds, v6 is exhausted: the v4 reservation is rolled back.
	_, err := Plugin.Add(cmdArgs("c2", "eth0", stdin))
	wantErr(t, err, cnierr.Internal, "no free address in range set 1")
	res, _ := dirState(t, dir)
	if !reflect.DeepEqual(res, map[string]string{"10.0.0.2": "c1\r\neth0", "fd00::5": "c1\r\neth0"}) {
		t.Fatalf("%q", res)
	}
	assertNoTemps(t, dir)
	// Requested IP taken in set 1 after set 0 succeeded: same rollback.
	if err := Plugin.Del(cmdArgs("c1", "eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	addOK(t, cmdArgs("c1", "eth0", stdin))
	top := map[string]any{"runtimeConfig": map[string]any{"ips": []string{"fd00::5/120"}}}
	_, err = Plugin.Add(cmdArgs("c3", "eth0", netconf(t, dir, ipam, top)))
	wantErr(t, err, cnierr.Internal, "requested IP fd00::5 is already allocated", "c1/eth0")
	if res, _ := dirState(t, dir); len(res) != 2 {
		t.Fatal(res)
	}
}

func TestRequestedIP(t *testing.T) {
	dir := t.TempDir()
	top := map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"10.0.0.77"}}}}
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), top)
	r := addOK(t, cmdArgs("c1", "eth0", stdin))
	if got := resultAddrs(r); got[0] != "10.0.0.77/24" {
		t.Fatal(got)
	}
	_, err := Plugin.Add(cmdArgs("c2", "eth0", stdin))
	wantErr(t, err, cnierr.Internal, "10.0.0.77", "already allocated")
	// Dynamic allocation continues after the requested address.
	r = addOK(t, cmdArgs("c3", "eth0", netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)))
	if got := resultAddrs(r); got[0] != "10.0.0.78/24" {
		t.Fatal(got)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	ipam := map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "fd00::/64"}}}}
	stdin := netconf(t, dir, ipam, nil)
	r := addOK(t, cmdArgs("c1", "eth0", stdin))
	addOK(t, cmdArgs("c2", "eth0", stdin))
	withPrev := func(res *current.Result) []byte {
		var m map[string]any
		_ = json.Unmarshal(stdin, &m)
		b, _ := json.Marshal(res)
		var pr map[string]any
		_ = json.Unmarshal(b, &pr)
		m["prevResult"] = pr
		out, _ := json.Marshal(m)
		return out
	}
	if err := Plugin.Check(cmdArgs("c1", "eth0", withPrev(r))); err != nil {
		t.Fatal(err)
	}
	// Wrong owner.
	wantErr(t, Plugin.Check(cmdArgs("c2", "eth0", withPrev(r))), cnierr.Internal, "not reserved for c2/eth0", "held by c1/eth0")
	// No prevResult.
	wantErr(t, Plugin.Check(cmdArgs("c1", "eth0", stdin)), cnierr.InvalidConfig, "prevResult")
	// prevResult missing one of the held addresses.
	short := *r
	short.IPs = r.IPs[:1]
	wantErr(t, Plugin.Check(cmdArgs("c1", "eth0", withPrev(&short))), cnierr.Internal, "also holds")
	// After DEL.
	if err := Plugin.Del(cmdArgs("c1", "eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, Plugin.Check(cmdArgs("c1", "eth0", withPrev(r))), cnierr.Internal, "not reserved")
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	if err := Plugin.Status(cmdArgs("", "", netconf(t, dir, v4Ranges("10.0.0.0/24"), nil))); err != nil {
		t.Fatal(err)
	}
	assertNoTemps(t, dir)
	// dataDir under a regular file cannot be created.
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantErr(t, Plugin.Status(cmdArgs("", "", netconf(t, filepath.Join(f, "sub"), v4Ranges("10.0.0.0/24"), nil))), cnierr.NotAvailable, "not usable")
}

func TestResultVersions(t *testing.T) {
	dir := t.TempDir()
	ipam := map[string]any{
		"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "fd00::/64"}}},
		"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
	}
	for i, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		stdin := netconf(t, dir, ipam, map[string]any{"cniVersion": v})
		res, err := Plugin.Add(cmdArgs(fmt.Sprintf("c%d", i), "eth0", stdin))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		conv, err := res.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		b, err := json.Marshal(conv)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["cniVersion"] != v {
			t.Fatalf("%s: %s", v, b)
		}
		s := string(b)
		switch v {
		case "0.1.0", "0.2.0":
			if m["ip4"] == nil || m["ip6"] == nil || !strings.Contains(s, `"gateway":"10.0.0.1"`) {
				t.Fatalf("%s: %s", v, b)
			}
		default:
			ips, _ := m["ips"].([]any)
			if len(ips) != 2 || !strings.Contains(s, `"address":"10.0.0.`) || !strings.Contains(s, `"address":"fd00::`) || !strings.Contains(s, `"dst":"0.0.0.0/0"`) {
				t.Fatalf("%s: %s", v, b)
			}
			if strings.HasPrefix(v, "0.3") && !strings.Contains(s, `"version":"4"`) {
				t.Fatalf("%s: %s", v, b)
			}
		}
	}
}

// In-process concurrency (delegate callers in one process): goroutines never
// share an address.
func TestConcurrentInProcess(t *testing.T) {
	dir := t.TempDir()
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cid := fmt.Sprintf("g%d", i)
			r, err := Plugin.Add(cmdArgs(cid, "eth0", stdin))
			if err != nil {
				t.Error(err)
				return
			}
			a := resultAddrs(r.(*current.Result))[0]
			mu.Lock()
			defer mu.Unlock()
			if o, dup := seen[a]; dup {
				t.Errorf("%s given to %s and %s", a, o, cid)
			}
			seen[a] = cid
		}(i)
	}
	wg.Wait()
	res, _ := dirState(t, dir)
	if len(res) != 64 || len(seen) != 64 {
		t.Fatal(len(res), len(seen))
	}
}

func TestLegacyDataDirCompat(t *testing.T) {
	// A data dir written by the reference plugin (0755 dir, lock file,
	// reservation files, cursor) keeps working.
	dir := t.TempDir()
	nd := filepath.Join(dir, testNet)
	if err := os.MkdirAll(nd, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, c := range map[string]string{"lock": "", "10.0.0.2": "old\r\neth0", "10.0.0.3": "older", "last_reserved_ip.0": "10.0.0.3"} {
		if err := os.WriteFile(filepath.Join(nd, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stdin := netconf(t, dir, v4Ranges("10.0.0.0/24"), nil)
	r := addOK(t, cmdArgs("new", "eth0", stdin))
	if got := resultAddrs(r); got[0] != "10.0.0.4/24" {
		t.Fatal(got)
	}
	// Legacy (container-ID only) file released by DEL of that container.
	if err := Plugin.Del(cmdArgs("older", "eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	if err := Plugin.Del(cmdArgs("old", "eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	res, _ := dirState(t, dir)
	if !reflect.DeepEqual(res, map[string]string{"10.0.0.4": "new\r\neth0"}) {
		t.Fatalf("%q", res)
	}
}

func TestStatusWithRuntimeOnlyRanges(t *testing.T) {
	// Ranges only via runtimeConfig.ipRanges: STATUS (which gets no
	// runtimeConfig) still succeeds.
	dir := t.TempDir()
	if err := Plugin.Status(cmdArgs("", "", netconf(t, dir, map[string]any{}, nil))); err != nil {
		t.Fatal(err)
	}
}

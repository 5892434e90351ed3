package hostlocal

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/test/fuzzcheck"
)

var hlSeeds = []string{
	`{"cniVersion":"1.1.0","name":"podnet","type":"bridge","ipam":{"type":"host-local","dataDir":"/tmp/x","ranges":[[{"subnet":"10.22.0.0/16","rangeStart":"10.22.0.10","rangeEnd":"10.22.0.200","gateway":"10.22.0.1"}],[{"subnet":"fd22::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd22::1"}]}}`,
	`{"cniVersion":"0.3.1","name":"mynet","type":"bridge","ipam":{"type":"host-local","subnet":"10.10.0.0/16","rangeStart":"10.10.1.20","rangeEnd":"10.10.3.50","gateway":"10.10.0.254","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.10.5.1"}]}}`,
	`{"cniVersion":"0.2.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24"},"args":{"cni":{"ips":["10.1.0.7"]}}}`,
	`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.2.0.0/24"}]]},"runtimeConfig":{"ips":["10.2.0.9/24"],"ipRanges":[[{"subnet":"10.3.0.0/24"}]]}}`,
	`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/30"}]]},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
	`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"::ffff:10.0.0.0/120"}]]}}`,
	`{"cniVersion":"1.1.0","name":"../etc","ipam":{"type":"host-local","dataDir":"relative"}}`,
	`{"name":"n","ipam":{"type":"host-local","ranges":[[]],"resolvConf":"/etc/resolv.conf"},"cni.dev/attachments":null}`,
	`{"name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"fd00::/126","rangeStart":"fd00::3"}]]}}`,
}

// FuzzLoadConfig: any stdin and CNI_ARGS give a spec-coded error naming
// host-local, or a config whose ranges are well-formed (start <= end,
// inside the subnet, one family per set, no overlaps, requests inside
// their set) and that re-validates: the canonical ranges written back as
// JSON parse to the same ranges.
func FuzzLoadConfig(f *testing.F) {
	for _, s := range hlSeeds {
		for _, a := range fuzzcheck.CNIArgs {
			f.Add([]byte(s), a)
		}
	}
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := LoadConfig(stdin, cniArgs)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if !filepath.IsAbs(c.DataDir) || c.Name == "" || strings.ContainsAny(c.Name, "/\x00") || c.Name == "." || c.Name == ".." {
			t.Fatalf("unsafe store location accepted: dataDir %q name %q", c.DataDir, c.Name)
		}
		if filepath.Dir(c.NetDir()) != c.DataDir {
			t.Fatalf("NetDir %q escapes dataDir %q", c.NetDir(), c.DataDir)
		}
		if len(c.Requested) != len(c.Ranges) {
			t.Fatalf("%d requests for %d sets", len(c.Requested), len(c.Ranges))
		}
		// Oracle for checkOverlaps: no two accepted ranges overlap.
		var flat []Range
		for _, set := range c.Ranges {
			flat = append(flat, set...)
		}
		for a := range flat {
			for b := a + 1; b < len(flat); b++ {
				x, y := flat[a], flat[b]
				if x.Start.BitLen() == y.Start.BitLen() && x.Start.Compare(y.End) <= 0 && y.Start.Compare(x.End) <= 0 {
					t.Fatalf("overlapping ranges accepted: %s and %s", x.String(), y.String())
				}
			}
		}
		var raw [][]rawRange
		for i, set := range c.Ranges {
			var rs []rawRange
			for _, r := range set {
				if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.End.Less(r.Start) || r.Start.Is4() != set[0].Start.Is4() {
					t.Fatalf("bad range %+v", r)
				}
				rs = append(rs, rawRange{Subnet: r.Subnet.String(), RangeStart: r.Start.String(), RangeEnd: r.End.String(), Gateway: r.Gateway.String()})
			}
			if q := c.Requested[i]; q.IsValid() && set.Find(q) < 0 {
				t.Fatalf("request %s not in set %d", q, i)
			}
			raw = append(raw, rs)
		}
		b, err := json.Marshal(map[string]any{"cniVersion": c.CNIVersion, "name": c.Name,
			"ipam": map[string]any{"type": "host-local", "dataDir": c.DataDir, "ranges": raw}})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := LoadConfig(b, "")
		if err != nil {
			t.Fatalf("canonical config %s does not re-validate: %v", b, err)
		}
		if fmt.Sprint(c2.Ranges) != fmt.Sprint(c.Ranges) && len(c2.Ranges) == len(c.Ranges) {
			for i := range c.Ranges {
				for j := range c.Ranges[i] {
					a, b := c.Ranges[i][j], c2.Ranges[i][j]
					if a.Subnet != b.Subnet || a.Start != b.Start || a.End != b.End || a.Gateway != b.Gateway {
						t.Fatalf("range changed on re-validation: %+v -> %+v", a, b)
					}
				}
			}
		}
	})
}

// FuzzLoadStoreConfig: what DEL and GC parse (name, dataDir, the valid
// attachments) never panics and never yields a directory outside dataDir.
func FuzzLoadStoreConfig(f *testing.F) {
	for _, s := range hlSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"name":"n","ipam":{"type":"host-local"},"cni.dev/valid-attachments":[{"containerID":1}]}`))
	f.Add([]byte(`{"name":"n","ipam":{"type":"host-local","dataDir":"/a/../.."},"cni.dev/attachments":[]}`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := LoadStoreConfig(stdin)
		if err != nil {
			fuzzcheck.Err(t, name, err)
			return
		}
		if filepath.Dir(c.NetDir()) != c.DataDir || !filepath.IsAbs(c.DataDir) {
			t.Fatalf("NetDir %q escapes dataDir %q", c.NetDir(), c.DataDir)
		}
	})
}

// FuzzStoreFiles plants garbage in a network's data dir — reservation
// files with any content, a last_reserved_ip cursor with any content, odd
// file names, directories named like addresses — then runs ADD, DEL and GC
// against it. No panic; errors are spec-coded; a successful ADD returns an
// address of the range that the directory now records for this attachment
// and that no planted reservation held; DEL then leaves no reservation of
// this attachment.
func FuzzStoreFiles(f *testing.F) {
	f.Add("10.1.0.2", "other\r\neth0", "10.1.0.3", "junk", "10.1.0.4", false)
	f.Add("10.1.0.2", "legacy-id-only", "10.1.0.6", "10.1.0.2", "last_reserved_ip.0", true)
	f.Add("10.1.0.5", "fz\r\neth0", "", "::ffff:10.1.0.5", ".tmp-res-1", false)
	f.Add("10.1.0.2", "", "10.1.0.2\n", "10.1.0.200", "lock", true)
	f.Add("not-an-ip", "\x00\xff\r\n\r\n", "fd00::1", "10.1.0.255", "10.1.0.3", true)
	f.Add("10.1.0.06", " fz \r\n eth0 ", "10.1.0.2", "", "10.1.0.2", false)
	f.Fuzz(func(t *testing.T, resName, resContent, cursor, cursor1, extra string, extraDir bool) {
		dir := t.TempDir()
		nd := filepath.Join(dir, testNet)
		if err := os.MkdirAll(nd, 0o700); err != nil {
			t.Fatal(err)
		}
		planted := map[netip.Addr]bool{}
		plant := func(n, content string) {
			if n == "" || strings.ContainsAny(n, "/\x00") || n == "." || n == ".." || len(n) > 200 {
				return
			}
			if err := os.WriteFile(filepath.Join(nd, n), []byte(content), 0o600); err != nil {
				return
			}
			if a, err := netip.ParseAddr(n); err == nil {
				planted[a] = true
			}
		}
		plant(resName, resContent)
		plant(cursorPrefix+"0", cursor)
		plant(cursorPrefix+"1", cursor1)
		if extraDir {
			if extra != "" && !strings.ContainsAny(extra, "/\x00") && extra != "." && extra != ".." && len(extra) < 200 {
				_ = os.Mkdir(filepath.Join(nd, extra), 0o700)
				if a, err := netip.ParseAddr(extra); err == nil {
					planted[a] = true // a directory named like an address
				}
			}
		} else {
			plant(extra, resContent)
		}
		stdin := netconf(t, dir, map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.1.0.0/29"}}, {{"subnet": "fd00::/125"}}}}, nil)
		r, err := Plugin.Add(cmdArgs("fz", "eth0", stdin))
		if err != nil {
			fuzzcheck.Err(t, name, err)
		} else {
			res := r.(*current.Result)
			fuzzcheck.Result(t, res)
			if len(res.IPs) != 2 {
				t.Fatalf("ADD gave %d addresses", len(res.IPs))
			}
			for _, ip := range res.IPs {
				a, _ := netip.AddrFromSlice(ip.Address.IP)
				a = a.Unmap()
				if planted[a] {
					t.Fatalf("ADD handed out %s, which a planted entry holds", a)
				}
				b, err := os.ReadFile(filepath.Join(nd, a.String()))
				if err != nil || string(b) != "fz\r\neth0" {
					t.Fatalf("reservation of %s: %q %v", a, b, err)
				}
			}
		}
		if err := Plugin.Del(cmdArgs("fz", "eth0", stdin)); err != nil {
			fuzzcheck.Err(t, name, err)
		}
		s, err := OpenStore(nd, false)
		if err != nil {
			return // e.g. "lock" planted as a directory: ADD and DEL failed cleanly above
		}
		ents, err := s.Entries()
		s.Close()
		if err != nil {
			return
		}
		for a, o := range ents {
			if !o.Legacy && o.ContainerID == "fz" && o.IfName == "eth0" {
				t.Fatalf("DEL left %s reserved for fz/eth0", a)
			}
		}
		gc := netconf(t, dir, nil, map[string]any{"cni.dev/valid-attachments": []any{}})
		if err := Plugin.GC(cmdArgs("", "", gc)); err != nil {
			fuzzcheck.Err(t, name, err)
		}
	})
}

// FuzzParseOwner: any reservation file content gives an Owner that matches
// itself, and the current format round-trips.
func FuzzParseOwner(f *testing.F) {
	for _, s := range []string{"abc\r\neth0", "abc", "", "\r\n", "a\r\nb\r\nc", " x \r\n y \n", "\xff\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o := parseOwner([]byte(s))
		if o.ContainerID != "" && !o.matches(o) {
			t.Fatalf("%+v does not match itself", o)
		}
		if !o.Legacy && !strings.Contains(o.ContainerID, lineBreak) && !strings.Contains(o.IfName, lineBreak) &&
			o.ContainerID == strings.TrimSpace(o.ContainerID) && o.IfName == strings.TrimSpace(o.IfName) && o.ContainerID != "" {
			if back := parseOwner([]byte(o.content())); back != o {
				t.Fatalf("round trip %+v -> %q -> %+v", o, o.content(), back)
			}
		}
	})
}

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podnet/podnet/plugins/all"
)

// The multi-call contract, tested on the real binary: built once, linked
// under every plugin name, exec'd with the CNI environment as a runtime does.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podnet-bin-")
	if err != nil {
		panic(err)
	}
	bin := filepath.Join(dir, "podnet")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
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

type cniOut struct {
	stdout []byte
	err    error
}

func runPlugin(t *testing.T, typ, cmd, stdin string, env ...string) cniOut {
	t.Helper()
	c := exec.Command(filepath.Join(binDir, typ))
	c.Env = append([]string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=ctr1", "CNI_NETNS=/var/run/netns/none",
		"CNI_IFNAME=eth0", "CNI_PATH=" + binDir, "PATH=/usr/bin:/bin"}, env...)
	c.Stdin = strings.NewReader(stdin)
	var so bytes.Buffer
	c.Stdout = &so
	err := c.Run()
	return cniOut{so.Bytes(), err}
}

func errCode(t *testing.T, o cniOut) (uint, string) {
	t.Helper()
	if o.err == nil {
		t.Fatalf("expected failure, got success: %s", o.stdout)
	}
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal(o.stdout, &e); err != nil {
		t.Fatalf("error output is not CNI error JSON: %q", o.stdout)
	}
	return e.Code, e.Msg
}

func TestInstallLinksEveryPlugin(t *testing.T) {
	for _, p := range all.Plugins() {
		if p.Type == "podnet" {
			continue // the binary itself: it is the plugin when CNI_COMMAND is set
		}
		target, err := os.Readlink(filepath.Join(binDir, p.Type))
		if err != nil {
			t.Fatalf("%s: %v", p.Type, err)
		}
		if filepath.Base(target) != "podnet" {
			t.Fatalf("%s -> %s, want podnet", p.Type, target)
		}
	}
}

func TestVersionVerb(t *testing.T) {
	for _, p := range all.Plugins() {
		o := runPlugin(t, p.Type, "VERSION", `{"cniVersion":"1.1.0"}`)
		if o.err != nil {
			t.Fatalf("%s VERSION: %v %s", p.Type, o.err, o.stdout)
		}
		var v struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(o.stdout, &v); err != nil {
			t.Fatal(err)
		}
		want := "0.1.0 0.2.0 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0"
		if strings.Join(v.SupportedVersions, " ") != want {
			t.Fatalf("%s supports %v, want %s", p.Type, v.SupportedVersions, want)
		}
	}
}

const staticConf = `{"cniVersion":%q,"name":"n1","type":"static",
 "ipam":{"type":"static","addresses":[{"address":"10.9.0.5/24","gateway":"10.9.0.1"},{"address":"fd09::5/64"}],
 "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.9.0.53"]}}}`

// Each cniVersion gets the result shape of that version: 0.2.0 has ip4/ip6,
// 0.3.x/0.4.0 have "version" on IPs, 1.x has none and no "version".
func TestResultShapePerVersion(t *testing.T) {
	for _, ver := range []string{"0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		o := runPlugin(t, "static", "ADD", sprintf(staticConf, ver))
		if o.err != nil {
			t.Fatalf("%s: %v %s", ver, o.err, o.stdout)
		}
		var m map[string]any
		if err := json.Unmarshal(o.stdout, &m); err != nil {
			t.Fatal(err)
		}
		if m["cniVersion"] != ver {
			t.Fatalf("%s: result cniVersion %v", ver, m["cniVersion"])
		}
		switch ver {
		case "0.2.0":
			ip4, _ := m["ip4"].(map[string]any)
			if ip4 == nil || ip4["ip"] != "10.9.0.5/24" {
				t.Fatalf("0.2.0: ip4 = %v", m["ip4"])
			}
			if _, ok := m["ips"]; ok {
				t.Fatal("0.2.0 result has ips")
			}
		default:
			ips, _ := m["ips"].([]any)
			if len(ips) != 2 {
				t.Fatalf("%s: ips = %v", ver, m["ips"])
			}
			first := ips[0].(map[string]any)
			_, hasVersion := first["version"]
			if old := ver < "1.0.0"; old != hasVersion {
				t.Fatalf("%s: ip entry %v (version field present=%v)", ver, first, hasVersion)
			}
			if first["address"] != "10.9.0.5/24" || first["gateway"] != "10.9.0.1" {
				t.Fatalf("%s: first ip %v", ver, first)
			}
		}
	}
}

func TestErrorCodes(t *testing.T) {
	cases := []struct {
		name, typ, cmd, stdin string
		env                   []string
		code                  uint
		msgHas                string
	}{
		{"not json", "static", "ADD", `{"cniVersion":"1.0.0",`, nil, 6, ""},
		{"wrong json type", "static", "ADD", `{"cniVersion":"1.0.0","name":"n","type":"static","ipam":{"type":"static","addresses":"x"}}`, nil, 6, "addresses"},
		{"bad address", "static", "ADD", `{"cniVersion":"1.0.0","name":"n","type":"static","ipam":{"type":"static","addresses":[{"address":"10.9.0.300/24"}]}}`, nil, 0, "address"},
		{"unsupported version", "static", "ADD", `{"cniVersion":"9.9.9","name":"n","type":"static","ipam":{"type":"static"}}`, nil, 1, ""},
		{"gc needs 1.1.0", "static", "GC", `{"cniVersion":"1.0.0","name":"n","type":"static","ipam":{"type":"static"}}`, nil, 1, "GC"},
		{"status needs 1.1.0", "loopback", "STATUS", `{"cniVersion":"0.4.0","name":"n","type":"loopback"}`, nil, 1, "STATUS"},
		{"check needs 0.4.0", "loopback", "CHECK", `{"cniVersion":"0.3.1","name":"n","type":"loopback"}`, nil, 1, "CHECK"},
		{"missing name", "loopback", "ADD", `{"cniVersion":"1.0.0","type":"loopback"}`, nil, 7, "name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := errCode(t, runPlugin(t, c.typ, c.cmd, c.stdin, c.env...))
			if c.code != 0 && code != c.code {
				t.Fatalf("code %d (%s), want %d", code, msg, c.code)
			}
			if code == 0 {
				t.Fatalf("code 0: %s", msg)
			}
			if !strings.Contains(msg, c.msgHas) {
				t.Fatalf("message %q does not name %q", msg, c.msgHas)
			}
		})
	}
	// A missing CNI_COMMAND's sibling variable: code 4.
	c := exec.Command(filepath.Join(binDir, "loopback"))
	c.Env = []string{"CNI_COMMAND=ADD"}
	c.Stdin = strings.NewReader(`{"cniVersion":"1.0.0","name":"n","type":"loopback"}`)
	out, _ := c.Output()
	code, msg := errCode(t, cniOut{out, errFail})
	if code != 4 {
		t.Fatalf("missing env: code %d (%s), want 4", code, msg)
	}
}

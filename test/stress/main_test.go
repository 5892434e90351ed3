// Package stress drives the real podnet binary the way a busy node does:
// many plugin processes at once on one store, and plugin processes killed
// (SIGKILL) at random instants of ADD and DEL, followed by the runtime's
// recovery (DEL of every attachment it is unsure of, then GC with the
// attachments that survive). It asserts what podnet guarantees about that
// (docs/reliability.md): no address handed to two live attachments, no
// state of a dead attachment left anywhere (reservations, host veths,
// ifbs, nftables elements, tuning state), and surviving pods still work.
//
// The IPAM tests need no root. The kill storm needs root and runs in a node
// network namespace it creates (roottest); it never touches the root
// namespace. Knobs: PODNET_KILL_SEED (replay), PODNET_STRESS_KILLS (target
// number of kills, default 100; the soak run uses 500+).
package stress

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podnet-stress-")
	if err != nil {
		panic(err)
	}
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "podnet"), "../../cmd/podnet").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	if out, err := exec.Command(filepath.Join(dir, "podnet"), "plugins", "install", "--dir", dir).CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pluginCmd is an exec of plugin typ with the CNI environment.
func pluginCmd(typ, command, cid, ifname, netns string, stdin []byte) *exec.Cmd {
	c := exec.Command(filepath.Join(binDir, typ))
	c.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns,
		"CNI_IFNAME=" + ifname, "CNI_PATH=" + binDir, "PATH=/usr/bin:/bin"}
	c.Stdin = bytes.NewReader(stdin)
	c.Stdout = &bytes.Buffer{}
	c.Stderr = &bytes.Buffer{}
	return c
}

func resultAddrs(out []byte) ([]string, error) {
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, err
	}
	var a []string
	for _, ip := range r.IPs {
		a = append(a, strings.Split(ip.Address, "/")[0])
	}
	return a, nil
}

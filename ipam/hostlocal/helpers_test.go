package hostlocal

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

const testNet = "testnet"

// netconf builds a bridge-style network config whose "ipam" object is ipam
// (type and dataDir filled in) plus extra top-level keys.
func netconf(t testing.TB, dataDir string, ipam map[string]any, top map[string]any) []byte {
	t.Helper()
	ip := map[string]any{"type": "host-local"}
	if dataDir != "" {
		ip["dataDir"] = dataDir
	}
	for k, v := range ipam {
		ip[k] = v
	}
	m := map[string]any{"cniVersion": "1.1.0", "name": testNet, "type": "bridge", "ipam": ip}
	for k, v := range top {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v4Ranges(subnet string) map[string]any {
	return map[string]any{"ranges": [][]map[string]string{{{"subnet": subnet}}}}
}

func cmdArgs(cid, ifname string, stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: cid, IfName: ifname, Netns: "/var/run/netns/x", StdinData: stdin}
}

func wantErr(t testing.TB, err error, code uint, substrs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error code %d containing %q, got nil", code, substrs)
	}
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want *types.Error code %d, got %T: %v", code, err, err)
	}
	if te.Code != code {
		t.Fatalf("want code %d, got %d: %v", code, te.Code, te)
	}
	for _, s := range substrs {
		if !strings.Contains(te.Msg, s) {
			t.Fatalf("error %q does not contain %q", te.Msg, s)
		}
	}
}

func addOK(t testing.TB, args *skel.CmdArgs) *current.Result {
	t.Helper()
	r, err := Plugin.Add(args)
	if err != nil {
		t.Fatalf("ADD %s/%s: %v", args.ContainerID, args.IfName, err)
	}
	return r.(*current.Result)
}

func resultAddrs(r *current.Result) []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

// dirState lists the network directory: reservations (ip -> content) and
// any other file names.
func dirState(t testing.TB, dataDir string) (map[string]string, []string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, testNet))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]string{}
	var other []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			b, err := os.ReadFile(filepath.Join(dataDir, testNet, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			res[e.Name()] = string(b)
			continue
		}
		other = append(other, e.Name())
	}
	sort.Strings(other)
	return res, other
}

// assertNoTemps fails if any temp file is left in the network dir.
func assertNoTemps(t testing.TB, dataDir string) {
	t.Helper()
	_, other := dirState(t, dataDir)
	for _, n := range other {
		if strings.HasPrefix(n, tmpPrefix) {
			t.Fatalf("temp file %s left behind (dir: %v)", n, other)
		}
	}
}

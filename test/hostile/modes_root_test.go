package hostile

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cniclient"
	"github.com/podnet/podnet/internal/roottest"
)

// TestStateModesRoot: tuning's saved state and portmap's lock directory
// are private (directories 0700, files 0600) even under umask 0. Root: the
// tuning ADD changes a dummy eth0 in a pod namespace, the portmap ADD
// programs nftables in a node namespace; both namespaces are the test's.
func TestStateModesRoot(t *testing.T) {
	roottest.Require(t)
	root := t.TempDir()
	_, pod := roottest.NewNS(t, "hpod")
	roottest.In(t, pod, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}) // no dummy module on every kernel
	})
	_, node := roottest.NewNS(t, "hnode")
	// portmap looks up the route to the pod: give the node one.
	roottest.In(t, node, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hv0"}, PeerName: "hv1"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("10.1.0.1/24")
		if err := netlink.AddrAdd(v, a); err != nil {
			return err
		}
		for _, n := range []string{"hv0", "hv1"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	prev := fmt.Sprintf(`{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":%q}],"ips":[{"interface":0,"address":"10.1.0.5/24"}]}`, pod)
	for _, c := range []struct{ typ, extra string }{
		{"tuning", `"mtu":1400,"sysctl":{"net.ipv4.conf.IFNAME.arp_ignore":"1"}`},
		{"portmap", `"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}`},
	} {
		stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net1","type":%q,"dataDir":%q,%s,"prevResult":%s}`,
			c.typ, filepath.Join(root, c.typ), c.extra, prev)
		cmd := exec.Command("sh", "-c", "umask 0; exec \"$0\"", filepath.Join(binDir, c.typ))
		cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=ctr1", "CNI_NETNS=" + pod, "CNI_IFNAME=eth0", "CNI_PATH=" + binDir, "PATH=/usr/bin:/bin"}
		cmd.Stdin = bytes.NewReader([]byte(stdin))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cniclient.RunIn(node, cmd); err != nil {
			t.Fatalf("%s ADD: %v %s", c.typ, err, out.String())
		}
		assertModes(t, filepath.Join(root, c.typ))
		cmd = exec.Command(filepath.Join(binDir, c.typ))
		cmd.Env = append([]string{}, "CNI_COMMAND=DEL", "CNI_CONTAINERID=ctr1", "CNI_NETNS="+pod, "CNI_IFNAME=eth0", "CNI_PATH="+binDir)
		cmd.Stdin = bytes.NewReader([]byte(stdin))
		if err := cniclient.RunIn(node, cmd); err != nil {
			t.Fatalf("%s DEL: %v", c.typ, err)
		}
	}
}

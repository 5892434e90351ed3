package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/agent/datastore/etcd/embedded"
	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/internal/roottest"
)

func TestAgentFlagErrorsNameTheField(t *testing.T) {
	var stderr bytes.Buffer
	c := exec.Command(filepath.Join(binDir, "podnet"), "agent", "--node-name", "n1", "--backend", "ipip", "--etcd-endpoints", "http://127.0.0.1:1")
	c.Stderr = &stderr
	if err := c.Run(); err == nil {
		t.Fatal("agent accepted a bad config")
	}
	for _, want := range []string{`field "clusterCIDRs": empty`, `field "backend": "ipip"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestAgentCommand runs the real binary against an embedded etcd, programming
// a namespace the test made (--netns), and stops it with SIGTERM: it exits
// cleanly and leaves the datapath in place.
func TestAgentCommand(t *testing.T) {
	_, ns := roottest.NewNS(t, "agentcmd")
	nsh, err := vns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul1"}); err != nil {
		t.Fatal(err)
	}
	ul, _ := h.LinkByName("ul0")
	h.LinkSetUp(ul)
	a, _ := netlink.ParseAddr("100.64.0.1/24")
	if err := h.AddrAdd(ul, a); err != nil {
		t.Fatal(err)
	}
	e, err := embedded.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	state := t.TempDir()
	var stderr bytes.Buffer
	c := exec.Command(filepath.Join(binDir, "podnet"), "agent", "--node-name", "n1", "--cluster-cidr", "10.244.0.0/16",
		"--underlay", "ul0", "--netns", ns, "--state-dir", state, "--cni-conf-dir", filepath.Join(state, "net.d"), "--etcd-endpoints", e.Endpoints()[0])
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	var st nodestate.State
	for {
		if st, err = nodestate.Read(state); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no node.json: %v\n%s", err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Node != "n1" || len(st.Subnets) != 1 || st.MTU != 1450 {
		t.Fatalf("node.json %+v", st)
	}
	// The conflist is written last, after the VXLAN device.
	for {
		if _, err := os.Stat(filepath.Join(state, "net.d", "10-podnet.conflist")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no conflist\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := h.LinkByName("podnet.1"); err != nil {
		t.Fatalf("no vxlan device: %v", err)
	}
	c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); err != nil {
		t.Fatalf("agent exit on SIGTERM: %v\n%s", err, stderr.String())
	}
	if _, err := h.LinkByName("podnet.1"); err != nil {
		t.Fatalf("vxlan device removed on exit: %v", err)
	}
}

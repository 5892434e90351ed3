// Package demo is `podnet demo`: the first thing a newcomer runs. In
// namespaces it creates (a "node" and a few "pods"), it drives the podnet
// plugins exactly as a runtime does — libcni exec'ing the plugin binaries
// with a conflist — gives every pod an address on a bridge, proves with real
// packets that pods reach each other and the node, checks, deletes, and
// removes everything it made. It never touches the root namespace.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/plugins/all"
)

// Options control the demo.
type Options struct {
	Pods   int    // pods on the bridge (default 3)
	Binary string // the podnet binary the plugin links point at (default: this executable)
	Out    io.Writer
}

type pod struct {
	name, path string
	ip         net.IP
}

// Run performs the demo and returns the first failure.
func Run(ctx context.Context, o Options) (err error) {
	if o.Pods <= 0 {
		o.Pods = 3
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return err
		}
	}
	w := o.Out
	say := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }

	tmp, err := os.MkdirTemp("", "podnet-demo-")
	if err != nil {
		return err
	}
	var cleanups []func() error
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			err = errors.Join(err, cleanups[i]())
		}
		err = errors.Join(err, os.RemoveAll(tmp))
		if err == nil {
			say("teardown: removed the node and pod namespaces, plugin links, IPAM store and cache")
		}
	}()

	binDir := filepath.Join(tmp, "bin")
	if _, err := all.Install(binDir, o.Binary); err != nil {
		return fmt.Errorf("install plugin links: %w", err)
	}
	dataDir := filepath.Join(tmp, "ipam")
	conf := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "podnet-demo",
  "plugins": [
    {"type": "bridge", "bridge": "pndemo0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": "10.244.7.0/24"}], [{"subnet": "fd00:244:7::/64"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}`, dataDir)
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return err
	}
	say("conflist (what a runtime would read from /etc/cni/net.d):\n%s", conf)
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(tmp, "cache"), nil)

	tag := fmt.Sprintf("%d", os.Getpid())
	nodeName := "podnet-demo-node-" + tag
	node, err := netns.Create(nodeName)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() error { return netns.Delete(nodeName) })
	say("node: created netns %s (the plugins run here, as on a real node)", nodeName)

	var pods []*pod
	for i := 1; i <= o.Pods; i++ {
		p := &pod{name: fmt.Sprintf("podnet-demo-pod%d-%s", i, tag)}
		if p.path, err = netns.Create(p.name); err != nil {
			return err
		}
		name := p.name
		cleanups = append(cleanups, func() error { return netns.Delete(name) })
		pods = append(pods, p)
	}

	rt := func(p *pod) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: "demo-" + p.name, NetNS: p.path, IfName: "eth0"}
	}
	inNode := func(fn func() error) error { return netns.Do(node, fn) }

	for _, p := range pods {
		var res types.Result
		start := time.Now()
		if err := inNode(func() error {
			var err error
			res, err = cni.AddNetworkList(ctx, list, rt(p))
			return err
		}); err != nil {
			return fmt.Errorf("ADD %s: %w", p.name, err)
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		var addrs []string
		for _, ip := range r.IPs {
			addrs = append(addrs, ip.Address.String())
			if ip.Address.IP.To4() != nil {
				p.ip = ip.Address.IP
			}
		}
		say("ADD   %-28s eth0 %v  (%.1f ms)", p.name, addrs, float64(time.Since(start).Microseconds())/1000)
		p := p
		cleanups = append(cleanups, func() error {
			return inNode(func() error { return cni.DelNetworkList(context.Background(), list, rt(p)) })
		})
	}

	say("\nping matrix (ICMP echo from row to column):")
	failed := 0
	header := fmt.Sprintf("%-12s", "")
	for _, q := range pods {
		header += fmt.Sprintf("%-14s", q.ip)
	}
	say("%s", header)
	rows := append([]*pod{{name: "node", path: node}}, pods...)
	for _, p := range rows {
		line := fmt.Sprintf("%-12s", shortName(p.name))
		for _, q := range pods {
			if p == q {
				line += fmt.Sprintf("%-14s", "-")
				continue
			}
			rtt, err := probe.Ping(p.path, q.ip, 2*time.Second)
			if err != nil {
				failed++
				line += fmt.Sprintf("%-14s", "FAIL")
				continue
			}
			line += fmt.Sprintf("%-14s", fmt.Sprintf("ok %.2fms", float64(rtt.Microseconds())/1000))
		}
		say("%s", line)
	}
	if failed > 0 {
		return fmt.Errorf("%d pings failed", failed)
	}

	for _, p := range pods {
		if err := inNode(func() error { return cni.CheckNetworkList(ctx, list, rt(p)) }); err != nil {
			return fmt.Errorf("CHECK %s: %w", p.name, err)
		}
	}
	say("\nCHECK ok for every pod")

	// DEL the first pod now (twice: DEL is idempotent), GC with the rest valid.
	first := pods[0]
	for i := 0; i < 2; i++ {
		if err := inNode(func() error { return cni.DelNetworkList(ctx, list, rt(first)) }); err != nil {
			return fmt.Errorf("DEL %s: %w", first.name, err)
		}
	}
	say("DEL   %s (twice, idempotent); its address is free again", first.name)
	var valid []types.GCAttachment
	for _, p := range pods[1:] {
		valid = append(valid, types.GCAttachment{ContainerID: rt(p).ContainerID, IfName: "eth0"})
	}
	if err := inNode(func() error { return cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}) }); err != nil {
		return fmt.Errorf("GC: %w", err)
	}
	if err := inNode(func() error { return cni.GetStatusNetworkList(ctx, list) }); err != nil {
		return fmt.Errorf("STATUS: %w", err)
	}
	say("GC and STATUS ok; the demo passes")
	return nil
}

func shortName(n string) string {
	if len(n) > 16 && n[:12] == "podnet-demo-" {
		n = n[12:]
	}
	if i := len(n) - 1; i > 0 {
		for j := len(n) - 1; j >= 0; j-- {
			if n[j] == '-' {
				return n[:j]
			}
		}
	}
	return n
}

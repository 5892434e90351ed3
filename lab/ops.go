package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/datastore/etcd"
)

// Status prints the lab's nodes and pods, as a table or (asJSON) as
// lab.json with each process's liveness. Each pod has its namespace,
// name, labels, node, netns and addresses ("ips").
func (l *Lab) Status(out io.Writer, asJSON bool) error {
	if asJSON {
		type nodeStatus struct {
			*Node
			AgentRunning bool `json:"agentRunning"`
		}
		v := struct {
			*Lab
			Nodes       []nodeStatus `json:"nodes"`
			EtcdRunning bool         `json:"etcdRunning"`
		}{Lab: l, EtcdRunning: alive(l.Etcd.PID)}
		for _, n := range l.Nodes {
			v.Nodes = append(v.Nodes, nodeStatus{n, alive(n.AgentPID)})
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	pods := l.ClusterCIDR.String()
	if l.ClusterCIDR6.IsValid() {
		pods += "," + l.ClusterCIDR6.String()
	}
	fmt.Fprintf(out, "lab %s (%s, backend %s, pods %s, etcd pid %d %s at %v)\n", l.Name, l.Phase, l.Backend, pods, l.Etcd.PID, running(l.Etcd.PID), l.Etcd.Endpoints)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tUNDERLAY\tSUBNETS\tAGENT")
	for _, n := range l.Nodes {
		var subs []string
		for _, s := range n.Subnets {
			subs = append(subs, s.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tpid %d %s\n", n.Name, n.Netns, n.IP, strings.Join(subs, ","), n.AgentPID, running(n.AgentPID))
	}
	tw.Flush()
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tNETNS\tIPS\tLABELS")
	for _, p := range l.Pods {
		var ips, labels []string
		for _, a := range p.IPs {
			ips = append(ips, a.String())
		}
		for k, v := range p.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Ref(), p.Node, p.Netns, strings.Join(ips, ","), strings.Join(labels, ","))
	}
	fmt.Fprintf(tw, "external\t-\t%s\t%s\t\n", l.External.Netns, l.External.IP)
	return tw.Flush()
}

func running(pid int) string {
	if alive(pid) {
		return "running"
	}
	return "NOT RUNNING"
}

// NetnsOf resolves a pod, node, "external", "fabric" or "router" to its namespace.
func (l *Lab) NetnsOf(name string) (string, error) {
	if p := l.Pod(name); p != nil {
		return p.Netns, nil
	}
	if n := l.Node(name); n != nil {
		return n.Netns, nil
	}
	switch name {
	case "external":
		return l.External.Netns, nil
	case "fabric":
		return l.Fabric, nil
	case "router":
		return l.Router, nil
	}
	var names []string
	for _, p := range l.Pods {
		names = append(names, p.Name)
	}
	for _, n := range l.Nodes {
		names = append(names, n.Name)
	}
	return "", fmt.Errorf("lab %s has no pod or node %q (have %s, external, fabric)", l.Name, name, strings.Join(names, ", "))
}

// Exec replaces this process with argv run inside the namespace of target
// (a pod, node, "external", "fabric" or "router"): the thread enters the namespace
// and execs, so nothing else of this process runs there.
func (l *Lab) Exec(target string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec: no command")
	}
	ns, err := l.NetnsOf(target)
	if err != nil {
		return err
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	f, err := os.Open(NetnsPath(ns))
	if err != nil {
		return err
	}
	runtime.LockOSThread() // never unlocked: this thread execs or the process exits
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	f.Close()
	return syscall.Exec(bin, argv, os.Environ())
}

// Leave makes node leave the cluster: its agent stops and its datastore
// records (node and subnet keys) are deleted, so the other agents drop
// its routes. Its pods stay but lose cross-node connectivity.
func (l *Lab) Leave(ctx context.Context, node string) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	if err := l.StopAgent(node, syscall.SIGTERM); err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: l.Etcd.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, etcd.DefaultPrefix+"/nodes/"+node); err != nil {
		return err
	}
	gr, err := cli.Get(ctx, etcd.DefaultPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range gr.Kvs {
		if string(kv.Value) == node {
			if _, err := cli.Delete(ctx, string(kv.Key)); err != nil {
				return err
			}
		}
	}
	return nil
}

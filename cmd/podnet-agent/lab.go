package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/lab"
)

// binaries returns this podnet-agent and the podnet binary next to it (or
// in PATH).
func binaries() (agentBin, podnetBin string, err error) {
	self, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return "", "", err
	}
	p := filepath.Join(filepath.Dir(self), "podnet")
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("podnet binary not found next to %s: build both with `make build`", self)
	}
	return self, p, nil
}

func newLabCmd() *cobra.Command {
	var name, root string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "a podnet cluster in network namespaces on this machine: up, status, check, exec, pod, label, apply, down, demo",
		Long: `podnet lab builds a whole cluster in network namespaces: a fabric namespace
(underlay bridges and a router), node namespaces each with its own podnet agent
process, an embedded etcd in a detached supervisor, and pods attached through
the real CNI plugins with the conflist each agent writes. Nothing is created
in the root namespace. State lives in /run/podnet-lab/<name>/lab.json.`,
	}
	cmd.PersistentFlags().StringVar(&name, "name", lab.DefaultName, "lab name (1-12 lower-case letters/digits); several labs can coexist")
	cmd.PersistentFlags().StringVar(&root, "root", lab.DefaultRoot, "directory holding the labs' state")
	_ = cmd.PersistentFlags().MarkHidden("root")

	var o lab.Options
	upOpts := func(c *cobra.Command) {
		c.Flags().IntVar(&o.Nodes, "nodes", 2, "number of nodes")
		c.Flags().IntVar(&o.PodsPerNode, "pods-per-node", 2, "pods per node (0: none; add them with `lab pod add`)")
		c.Flags().StringVar(&o.Backend, "backend", lab.VXLAN, "vxlan, host-gw or auto (auto: nodes alternate between two routed underlay segments)")
		c.Flags().BoolVar(&o.Kubernetes, "kubernetes", false, "a real Kubernetes "+lab.KubeVersion+" cluster: control plane, per node containerd + kubelet + kube-proxy (nftables), podnet installed by `kubectl apply` of deploy/podnet.yaml (binaries: tools/kubernetes/build.sh all; images: make image, tools/image/test-images.sh)")
		c.Flags().BoolVar(&o.IPv6, "ipv6", false, "dual-stack: an IPv6 cluster CIDR (a ULA /48 derived from the lab name) as well; pods get an IPv4 and an IPv6 address")
	}
	fill := func() error {
		var err error
		o.Name, o.Root, o.Out = name, root, os.Stdout
		o.AgentBin, o.PodnetBin, err = binaries()
		if err != nil {
			return err
		}
		if o.Kubernetes {
			o.PodsPerNode = 0
		}
		return nil
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "create the lab: fabric, etcd, nodes with agents, pods",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := fill(); err != nil {
				return err
			}
			_, err := lab.Up(c.Context(), o)
			if err != nil {
				return fmt.Errorf("%w\n(what was made stays for inspection; remove it with `podnet lab down --name %s`)", err, name)
			}
			fmt.Printf("lab %s is up: `podnet lab check --name %s`, `podnet lab exec --name %s n1-p1 -- ...`, `podnet lab down --name %s`\n", name, name, name, name)
			return nil
		},
	}
	upOpts(up)

	demo := &cobra.Command{
		Use:   "demo",
		Short: "up (2 nodes x 2 pods, vxlan), status, check, down in one go",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("name") {
				name = "demo"
			}
			if err := fill(); err != nil {
				return err
			}
			return lab.Demo(c.Context(), o)
		},
	}
	upOpts(demo)

	var asJSON string
	status := &cobra.Command{
		Use:   "status",
		Short: "nodes and pods with their namespaces and addresses",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			if asJSON != "" && asJSON != "json" {
				return fmt.Errorf("-o %q: only json", asJSON)
			}
			return l.Status(os.Stdout, asJSON == "json")
		},
	}
	status.Flags().StringVarP(&asJSON, "output", "o", "", "output format: json")

	check := &cobra.Command{
		Use:   "check",
		Short: "all-pairs ICMP, TCP and UDP between pods and nodes, and pods to an external host; non-zero exit on any failure",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			_, err = l.Check(os.Stdout)
			return err
		},
	}

	execCmd := &cobra.Command{
		Use:   "exec POD|NODE -- CMD [ARGS...]",
		Short: "run a command inside a pod's (or node's, external's, fabric's) network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			l, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			return l.Exec(args[0], args[1:])
		},
	}

	down := &cobra.Command{
		Use:   "down",
		Short: "DEL pods, stop agents and etcd, delete every namespace and file of the lab (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return lab.Down(root, name, os.Stdout)
		},
	}

	var seconds, runs int
	bench := &cobra.Command{
		Use:   "bench",
		Short: "iperf3 single-stream TCP throughput: pods on one node, across nodes, and the underlay (use --backend auto --nodes 3 for host-gw and vxlan in one run)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			_, err = l.Bench(c.Context(), seconds, runs, os.Stdout)
			return err
		},
	}
	bench.Flags().IntVar(&seconds, "seconds", 3, "seconds per measurement")
	bench.Flags().IntVar(&runs, "runs", 3, "measurements per pair (interleaved; the median is reported)")

	var dir, clientURL, peerURL string
	serve := &cobra.Command{
		Use:    "serve",
		Short:  "host the lab's embedded etcd (started detached by `lab up`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return lab.Serve(ctx, dir, clientURL, peerURL)
		},
	}
	serve.Flags().StringVar(&dir, "dir", "", "the lab directory")
	serve.Flags().StringVar(&clientURL, "client-url", "", "etcd client URL of a previous run (restart)")
	serve.Flags().StringVar(&peerURL, "peer-url", "", "etcd peer URL of a previous run (restart)")

	kubectl := &cobra.Command{
		Use:   "kubectl -- ARGS...",
		Short: "run kubectl against a --kubernetes lab (from its control plane's namespace)",
		RunE: func(c *cobra.Command, args []string) error {
			l, err := lab.Load(root, name)
			if err != nil {
				return err
			}
			return l.Kubectl(c.Context(), args, os.Stdin, os.Stdout, os.Stderr)
		},
	}
	var kubeNode string
	kubenode := &cobra.Command{
		Use:    "kubenode",
		Short:  "a --kubernetes lab node's supervisor (started by `lab up` in the node's namespaces)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return lab.RunKubeNode(ctx, root, name, kubeNode)
		},
	}
	kubenode.Flags().StringVar(&kubeNode, "node", "", "the node")
	cmd.AddCommand(kubectl, kubenode)
	cmd.AddCommand(up, demo, status, check, execCmd, down, bench, serve, newBenchPolicyCmd(&name, &root), newLabE2ECmd(&name, &root), newLabCNPCmd(&name, &root))
	cmd.AddCommand(labObjectCmds(&name, &root)...)
	pol := &cobra.Command{Use: "policy", Short: "NetworkPolicy in the lab: explain a verdict, dump a node's compiled rules"}
	pol.AddCommand(newPolicyCmds(func(ctx context.Context) (policy.Model, error) {
		l, err := lab.Load(root, name)
		if err != nil {
			return policy.Model{}, err
		}
		return l.PolicyModel(ctx)
	}, func(node string) (string, error) {
		l, err := lab.Load(root, name)
		if err != nil {
			return "", err
		}
		n := l.Node(node)
		if n == nil {
			return "", fmt.Errorf("--node %q: not a node of lab %s", node, name)
		}
		return lab.NetnsPath(n.Netns), nil
	})...)
	cmd.AddCommand(pol)
	return cmd
}

package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/metrics"
	"github.com/podnet/podnet/agent/nodestate"
	"github.com/podnet/podnet/agent/overlay"
)

func newAgentCmd() *cobra.Command {
	var (
		cfg         agent.Config
		cidrs       []string
		logLevel    string
		policyOn    bool
		metricsAddr string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: lease this node's pod subnet, publish it, and program routes to every other node (vxlan, host-gw or auto)",
		Long: `The node agent leases this node's pod subnets from the datastore (etcd, or its Node's spec.podCIDRs), publishes
its underlay address and VXLAN MAC, watches every other node and keeps the kernel in
line: the podnet.<VNI> VXLAN device, one route/neighbour/FDB entry per remote node
(or a host-gw route), the podnet-nat masquerade table and forwarding sysctls. It
writes <state-dir>/node.json for the podnet CNI plugin. It runs until SIGTERM or
SIGINT and leaves the datapath in place when it stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			for _, s := range cidrs {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return fmt.Errorf("--cluster-cidr %q: %w", s, err)
				}
				cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, p)
			}
			if cfg.NodeName == "" {
				h, err := os.Hostname()
				if err != nil {
					return fmt.Errorf("--node-name not set and no hostname: %w", err)
				}
				cfg.NodeName = h
			}
			c := cfg.WithDefaults()
			if err := c.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			c.Datastore.Log = log.With("node", c.NodeName)
			store, err := agent.OpenStore(ctx, c.Datastore)
			if err != nil {
				return err
			}
			defer store.Close()
			ag, err := agent.New(c, store, log)
			if err != nil {
				return err
			}
			if policyOn {
				src, err := agent.ObjectsOf(store, log.With("node", c.NodeName, "part", "policy-objects"))
				if err != nil {
					return err
				}
				ag.EnablePolicy(src)
			}
			if metricsAddr != "" {
				m := metrics.New()
				ag.SetMetrics(m)
				go func() {
					if err := m.Serve(ctx, metricsAddr); err != nil {
						log.Error("metrics endpoint", "err", err)
					}
				}()
			}
			return ag.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", "", "this node's name in the datastore (default: hostname)")
	f.StringSliceVar(&cidrs, "cluster-cidr", nil, "pod network CIDR, one IPv4 and optionally one IPv6 (repeat or comma-separate), e.g. 10.244.0.0/16")
	f.IntVar(&cfg.SubnetLenV4, "subnet-len-v4", agent.DefaultSubnetLenV4, "prefix length of each node's IPv4 pod subnet")
	f.IntVar(&cfg.SubnetLenV6, "subnet-len-v6", agent.DefaultSubnetLenV6, "prefix length of each node's IPv6 pod subnet")
	f.StringVar(&cfg.Backend, "backend", overlay.VXLAN, "vxlan, host-gw, or auto (host-gw to nodes on our underlay L2 subnet, vxlan to the rest)")
	f.IntVar(&cfg.VNI, "vni", agent.DefaultVNI, "VXLAN network identifier (device podnet.<VNI>)")
	f.IntVar(&cfg.Port, "vxlan-port", agent.DefaultPort, "VXLAN UDP port")
	f.IntVar(&cfg.MTU, "mtu", 0, "pod MTU; 0 = underlay MTU - 50 for vxlan/auto, underlay MTU for host-gw")
	f.StringVar(&cfg.Underlay, "underlay", "auto", "underlay interface: auto (the default route's), an interface name, or a CIDR holding its address")
	f.StringVar(&cfg.StateDir, "state-dir", nodestate.DefaultDir, "directory for node.json, read by the podnet CNI plugin")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "where to write the podnet conflist ("+agent.ConflistName+") once node.json is ready; \"\" = do not write one")
	f.StringVar(&cfg.NetNS, "netns", "", "program this network namespace (path) instead of the agent's own")
	f.DurationVar(&cfg.ResyncInterval, "resync", agent.DefaultResync, "full reconcile interval (repairs manual changes)")
	f.StringVar(&cfg.Datastore.Type, "datastore", "etcd", "datastore type: etcd, or kubernetes (subnets = Node spec.podCIDRs, VTEP data in node annotations)")
	f.StringVar(&cfg.Datastore.Kubeconfig, "kubeconfig", "", "kubeconfig file for --datastore kubernetes (default: in-cluster service account)")
	f.StringSliceVar(&cfg.Datastore.Endpoints, "etcd-endpoints", nil, "etcd client URLs, e.g. https://10.0.0.1:2379")
	f.StringVar(&cfg.Datastore.CertFile, "etcd-cert", "", "etcd client certificate (PEM)")
	f.StringVar(&cfg.Datastore.KeyFile, "etcd-key", "", "etcd client key (PEM)")
	f.StringVar(&cfg.Datastore.CAFile, "etcd-ca", "", "CA bundle to verify etcd (PEM)")
	f.StringVar(&cfg.Datastore.Prefix, "etcd-prefix", "/podnet/v1", "etcd key prefix")
	f.DurationVar(&cfg.Datastore.LeaseTTL, "lease-ttl", agent.DefaultLeaseTTL, "lease TTL: a dead node's subnet is freed this long after its last renewal")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&policyOn, "network-policy", true, "enforce Kubernetes NetworkPolicy (table inet podnet-policy; docs/policy.md)")
	f.IntVar(&cfg.PolicyLogGroup, "policy-log-group", agent.DefaultPolicyLogGroup, "NFLOG group of policy drops (at most 10/s per profile chain, read by `podnet policy log`); -1 = none")
	f.StringVar(&metricsAddr, "metrics-address", "", "serve /metrics, /healthz and /readyz on this host:port (e.g. :9490) or unix:PATH; \"\" = off")
	return cmd
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	vns "github.com/vishvananda/netns"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
)

// policyQueryFlags are explain's and dump's own flags.
type policyQueryFlags struct {
	from, to, port, output, node string
}

// newPolicyCmds are `explain`, `dump` and `log`, reading the model from
// model(); netnsOf gives the network namespace (path, "" = this process's)
// of a node, where `log` listens.
func newPolicyCmds(model func(context.Context) (policy.Model, error), netnsOf func(node string) (string, error)) []*cobra.Command {
	var q policyQueryFlags
	explain := &cobra.Command{
		Use:   "explain --from NS/POD|IP --to NS/POD|IP --port PROTO/PORT",
		Short: "say whether a connection is allowed and which policy and rule decide it (compiled as the agents compile it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := model(cmd.Context())
			if err != nil {
				return err
			}
			return runExplain(cmd.OutOrStdout(), m, q)
		},
	}
	explain.Flags().StringVar(&q.from, "from", "", "source: NAMESPACE/POD or an IP address")
	explain.Flags().StringVar(&q.to, "to", "", "destination: NAMESPACE/POD or an IP address")
	explain.Flags().StringVar(&q.port, "port", "tcp/80", "destination protocol and port: tcp/80, udp/53, sctp/9")
	explain.Flags().StringVarP(&q.output, "output", "o", "", `"json" for {"verdict": ...}`)
	_ = explain.MarkFlagRequired("from")
	_ = explain.MarkFlagRequired("to")

	var node string
	dump := &cobra.Command{
		Use:   "dump --node NODE",
		Short: "print a node's compiled policy table (inet podnet-policy) as nft text",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := model(cmd.Context())
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), policy.Render(policy.Compile(m, node)))
			return err
		},
	}
	dump.Flags().StringVar(&node, "node", "", "the node whose rules to print")
	_ = dump.MarkFlagRequired("node")

	var logNode string
	var group int
	logCmd := &cobra.Command{
		Use:   "log",
		Short: "stream the packets network policy drops on a node (NFLOG, rate-limited), with the pod they were dropped for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if group < 0 || group > 65535 {
				return fmt.Errorf("--group %d: an NFLOG group is 0-65535", group)
			}
			path, err := netnsOf(logNode)
			if err != nil {
				return err
			}
			pods := map[netip.Addr]string{} // pod address -> namespace/name
			if m, err := model(cmd.Context()); err == nil {
				for _, p := range m.Pods {
					if p.HostNetwork {
						continue
					}
					for _, a := range p.IPs {
						pods[a] = p.Key()
					}
				}
			}
			return streamLog(cmd.Context(), cmd.OutOrStdout(), path, uint16(group), pods)
		},
	}
	logCmd.Flags().StringVar(&logNode, "node", "", "the node whose drops to stream")
	logCmd.Flags().IntVar(&group, "group", agent.DefaultPolicyLogGroup, "the agents' --policy-log-group")
	return []*cobra.Command{explain, dump, logCmd}
}

// streamLog prints every logged drop until ctx ends; pods names the pods
// by address.
func streamLog(ctx context.Context, out io.Writer, nsPath string, group uint16, pods map[netip.Addr]string) error {
	fd := -1
	if nsPath != "" {
		ns, err := vns.GetFromPath(nsPath)
		if err != nil {
			return fmt.Errorf("netns %s: %w", nsPath, err)
		}
		defer ns.Close()
		fd = int(ns)
	}
	r, err := policykernel.ListenLog(fd, group)
	if err != nil {
		return err
	}
	defer r.Close()
	go func() {
		<-ctx.Done()
		_ = r.SetDeadline(time.Now())
	}()
	for {
		ds, err := r.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, d := range ds {
			if _, err := fmt.Fprintf(out, "%s %s\n", time.Now().Format(time.TimeOnly), dropString(d, pods)); err != nil {
				return err
			}
		}
	}
}

// dropString describes a logged drop: "deny DIRECTION POD: PROTO SRC ->
// DST". The chain is a profile's ("ingress-<H>" or "egress-<H>"), shared
// by the pods with the same rules, so the pod is the one the drop was for
// by address: the destination's for ingress, the source's for egress
// ("pod ADDRESS" when pods does not know it).
func dropString(d policykernel.LoggedDrop, pods map[netip.Addr]string) string {
	dir, self := "egress", d.Pod()
	if d.Ingress() {
		dir = "ingress"
	}
	pod := pods[self]
	if pod == "" {
		pod = "pod " + self.String()
	}
	dst := d.Dst.String()
	if d.Port != 0 {
		dst = netip.AddrPortFrom(d.Dst, d.Port).String()
	}
	return fmt.Sprintf("deny %s %s: %s %s -> %s", dir, pod, policy.Proto(d.Proto), d.Src, dst)
}

func runExplain(out io.Writer, m policy.Model, q policyQueryFlags) error {
	proto, port, err := policy.ParsePort(q.port)
	if err != nil {
		return fmt.Errorf("--port: %w", err)
	}
	to, err := m.Resolve(q.to, 0)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	fam := 4
	if to.Is6() {
		fam = 6
	}
	from, err := m.Resolve(q.from, fam)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	if from.Is4() != to.Is4() {
		return fmt.Errorf("--from %s and --to %s are of different address families", from, to)
	}
	e := policy.ExplainModel(m, policy.Packet{Src: from, Dst: to, Proto: proto, Port: port})
	switch q.output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(e)
	case "":
		_, err := fmt.Fprintln(out, e.String())
		return err
	default:
		return fmt.Errorf("--output %q: only json", q.output)
	}
}

// newPolicyCmd is `podnet policy` against the cluster's datastore.
func newPolicyCmd() *cobra.Command {
	var ds agent.DatastoreConfig
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "NetworkPolicy: explain a verdict, dump a node's compiled rules",
	}
	model := func(ctx context.Context) (policy.Model, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		store, err := agent.OpenStore(ctx, ds)
		if err != nil {
			return policy.Model{}, err
		}
		defer store.Close()
		src, err := agent.ObjectsOf(store, slog.New(slog.DiscardHandler))
		if err != nil {
			return policy.Model{}, err
		}
		o, err := datastore.ReadObjects(ctx, src)
		if err != nil {
			return policy.Model{}, err
		}
		return o.Model(), nil
	}
	f := cmd.PersistentFlags()
	f.StringVar(&ds.Type, "datastore", "etcd", "etcd or kubernetes")
	f.StringVar(&ds.Kubeconfig, "kubeconfig", "", "kubeconfig for --datastore kubernetes (default: in-cluster)")
	f.StringSliceVar(&ds.Endpoints, "etcd-endpoints", nil, "etcd client URLs")
	f.StringVar(&ds.CertFile, "etcd-cert", "", "etcd client certificate (PEM)")
	f.StringVar(&ds.KeyFile, "etcd-key", "", "etcd client key (PEM)")
	f.StringVar(&ds.CAFile, "etcd-ca", "", "CA bundle to verify etcd (PEM)")
	f.StringVar(&ds.Prefix, "etcd-prefix", "/podnet/v1", "etcd key prefix")
	cmd.AddCommand(newPolicyCmds(model, func(node string) (string, error) {
		if node != "" {
			return "", fmt.Errorf("--node: run `podnet policy log` on the node itself (it listens in its own network namespace)")
		}
		return "", nil
	})...)
	return cmd
}

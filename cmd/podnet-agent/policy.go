package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/agent"
	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/policy"
)

// policyQueryFlags are explain's and dump's own flags.
type policyQueryFlags struct {
	from, to, port, output, node string
}

// newPolicyCmds are `explain` and `dump`, reading the model from model().
func newPolicyCmds(model func(context.Context) (policy.Model, error)) []*cobra.Command {
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
	return []*cobra.Command{explain, dump}
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
		return policy.ModelFromObjects(o.Namespaces, o.Pods, o.Policies), nil
	}
	f := cmd.PersistentFlags()
	f.StringVar(&ds.Type, "datastore", "etcd", "etcd or kubernetes")
	f.StringVar(&ds.Kubeconfig, "kubeconfig", "", "kubeconfig for --datastore kubernetes (default: in-cluster)")
	f.StringSliceVar(&ds.Endpoints, "etcd-endpoints", nil, "etcd client URLs")
	f.StringVar(&ds.CertFile, "etcd-cert", "", "etcd client certificate (PEM)")
	f.StringVar(&ds.KeyFile, "etcd-key", "", "etcd client key (PEM)")
	f.StringVar(&ds.CAFile, "etcd-ca", "", "CA bundle to verify etcd (PEM)")
	f.StringVar(&ds.Prefix, "etcd-prefix", "/podnet/v1", "etcd key prefix")
	cmd.AddCommand(newPolicyCmds(model)...)
	return cmd
}

package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/lab"
)

// newBenchPolicyCmd is `lab bench-policy` (docs/benchmark.md).
func newBenchPolicyCmd(name, root *string) *cobra.Command {
	var o lab.PolicyBenchOptions
	c := &cobra.Command{
		Use:   "bench-policy",
		Short: "NetworkPolicy cost: programming latency, RR rate and throughput with 0 vs N policies, pod add latency, agent cold start and RSS",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(*root, *name)
			if err != nil {
				return err
			}
			o.Out = os.Stdout
			return l.BenchPolicy(c.Context(), o)
		},
	}
	f := c.Flags()
	f.IntVar(&o.Pods, "pods", 1000, "simulated Pod objects (etcd only)")
	f.IntVar(&o.Policies, "policies", 5000, "NetworkPolicies of the loaded side")
	f.IntVar(&o.ClusterPolicies, "cluster-policies", 0, "ClusterNetworkPolicies (Admin and Baseline tiers) loaded with the NetworkPolicies")
	f.IntVar(&o.Changes, "changes", 50, "policy changes timed for the programming latency")
	f.IntVar(&o.Rounds, "rounds", 3, "interleaved rounds of 0 vs --policies policies")
	f.IntVar(&o.Seconds, "seconds", 3, "seconds per RR and per iperf3 measurement")
	f.IntVar(&o.Adds, "adds", 30, "pod adds timed per namespace")
	f.IntVar(&o.ColdPods, "cold-pods", 10000, "simulated pods for the cold start (0: skip it)")
	f.StringSliceVar(&o.Parts, "parts", nil, "what to run: latency,packet,add,cold (default all)")
	f.Float64Var(&o.MaxForeign, "max-foreign-cpu", 0.25, "CPU cores used by other processes, or taken by the hypervisor (steal), before the run or during a part, above which the run is reported noisy")
	f.Float64Var(&o.MaxSpread, "max-spread", 0.10, "(max-min)/median of a side above which the run is reported noisy")
	f.BoolVar(&o.PauseAgents, "pause-agents", true, "stop the agents (SIGSTOP) while the per-packet cost is measured, so their compiles do not share the CPU with the traffic")
	f.IntVar(&o.MaxAgentRSS, "max-agent-rss", 2048, "MiB: abort a load (and report it) when an agent's RSS passes this, to spare a shared machine")
	return c
}

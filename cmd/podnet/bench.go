package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/bench"
)

func newBenchCmd() *cobra.Command {
	var o bench.Options
	var chain string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "time CNI ADD/DEL per pod, podnet vs the reference plugins " + bench.ReferenceVersion,
		Long: `Times ADD and DEL per pod for podnet and for the reference plugins ` + bench.ReferenceVersion + `, in the
same run, all exec'd by libcni inside node network namespaces this command
creates (the root namespace is not touched). Chains (--chain):

  bridge      bridge (isGateway, ipMasq) + host-local
  meta        bridge + host-local + portmap (one host port mapping per pod, as
              the portMappings capability) + firewall; the reference runs twice,
              with its iptables and with its nftables backends
  all         bridge, then meta (the default)
  host-local  host-local alone (IPAM, for development)

For each chain it prints the sequential medians, the floor (a loopback-only
ADD), the ratio podnet/reference above the floor (target <= ` + fmt.Sprint(bench.Target) + `), and a
parallel run: --parallel pods ADDed at once, then DELed at once, in pods/s.

Needs root. Reference plugins (--reference-dir, else $` + bench.EnvReferenceDir + `, $GOBIN,
$GOPATH/bin, ~/go/bin, /var/cache/podnet-ref, /tmp/refbin): ` + bench.InstallHint("DIR"),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			chains, err := bench.Chains(chain)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Log = cmd.ErrOrStderr()
			for i, c := range chains {
				o.Chain = c
				rep, err := bench.Run(ctx, o)
				if err != nil {
					return fmt.Errorf("chain %s: %w", c, err)
				}
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				rep.WriteTable(cmd.OutOrStdout())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Iterations, "iterations", 50, "timed sequential ADD+DEL iterations per implementation")
	f.IntVar(&o.Warmup, "warmup", 2, "untimed iterations first")
	f.IntVar(&o.Parallel, "parallel", bench.DefaultParallel, "pods ADDed (then DELed) at once in the parallel run; negative: no parallel run")
	f.IntVar(&o.ParallelRounds, "parallel-rounds", 1, "parallel waves per implementation (the median is reported)")
	f.StringVar(&o.ReferenceDir, "reference-dir", "", "directory with the reference plugins (default: first of $"+bench.EnvReferenceDir+", $GOBIN, $GOPATH/bin, ~/go/bin, /var/cache/podnet-ref, /tmp/refbin that has them)")
	f.StringVar(&o.Podnet, "podnet", "", "podnet binary to measure (default: this one)")
	f.StringVar(&chain, "chain", bench.ChainAll, "chain to time: all (bridge, then meta), bridge, meta, macvlan or host-local")
	return cmd
}

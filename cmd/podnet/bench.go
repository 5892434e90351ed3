package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/bench"
)

func newBenchCmd() *cobra.Command {
	var o bench.Options
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "time CNI ADD/DEL per pod, podnet vs the reference plugins " + bench.ReferenceVersion,
		Long: `Times sequential ADD and DEL per pod of the chain bridge (isGateway, ipMasq) +
host-local for podnet and for the reference plugins ` + bench.ReferenceVersion + `, in the same run,
both exec'd by libcni inside node network namespaces this command creates
(the root namespace is not touched), and prints medians, the floor (a
loopback-only ADD) and the ratio podnet/reference above the floor.

Needs root. Reference plugins: ` + bench.InstallHint("DIR"),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Log = cmd.ErrOrStderr()
			rep, err := bench.Run(ctx, o)
			if err != nil {
				return err
			}
			rep.WriteTable(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Iterations, "iterations", 50, "timed ADD+DEL iterations per implementation")
	f.IntVar(&o.Warmup, "warmup", 2, "untimed iterations first")
	f.StringVar(&o.ReferenceDir, "reference-dir", "", "directory with the reference plugins (default: first of $GOBIN, $GOPATH/bin, ~/go/bin, /tmp/refbin that has them)")
	f.StringVar(&o.Podnet, "podnet", "", "podnet binary to measure (default: this one)")
	f.StringVar(&o.Chain, "chain", bench.ChainBridge, "chain to time: bridge (bridge+host-local) or host-local (IPAM only)")
	return cmd
}

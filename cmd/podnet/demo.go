package main

import (
	"github.com/spf13/cobra"

	"github.com/podnet/podnet/demo"
)

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "pods on a bridge in namespaces: addresses, pings, check, delete, teardown (needs root)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			return demo.Run(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&o.Pods, "pods", 3, "number of pods")
	return cmd
}

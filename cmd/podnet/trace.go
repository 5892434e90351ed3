package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/internal/trace"
)

func newTraceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "trace [FILE]",
		Short: "summarize a PODNET_TRACE file: median start and duration per plugin, verb and step",
		Long: `Plugins run with PODNET_TRACE=FILE append one JSON line per step of each
invocation to FILE (PODNET_TRACE=1: to stderr). This prints, per plugin, verb
and step, how many invocations had it and its median start (ms after main) and
duration, in order of start. Reads stdin without FILE. See docs/performance.md.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			if len(args) == 1 {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			return trace.Summarize(in, cmd.OutOrStdout())
		},
	}
}

// Command podnet-agent is podnet's long-running side: the node agent (and
// later the lab). It is a separate binary from the plugins so that its heavy
// dependencies do not slow down every CNI call; `podnet agent ...` execs it.
// See cmd/podnet/heavy.go.
package main

import (
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:          "podnet-agent",
		Short:        "podnet node agent",
		SilenceUsage: true,
	}
	root.AddCommand(newAgentCmd(), newLabCmd(), newPolicyCmd())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}

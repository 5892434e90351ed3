// Command podnet is one multi-call binary: run under a CNI plugin's type name
// (argv[0] basename, e.g. a symlink bridge -> podnet) it is that plugin; run
// as podnet it is the CLI (plugins install, cni, bench, ...).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/internal/trace"
	"github.com/podnet/podnet/plugins/all"
)

func main() {
	// "podnet" is both the CLI and podnet's own CNI type: run as the
	// plugin only when a runtime calls it (CNI_COMMAND set).
	argv0 := filepath.Base(os.Args[0])
	if p := all.ByType(argv0); p != nil && (argv0 != "podnet" || os.Getenv("CNI_COMMAND") != "") {
		trace.Start(argv0) // PODNET_TRACE: per-step durations (docs/performance.md)
		if err := p.Main(); err != nil {
			if perr := err.Print(); perr != nil {
				fmt.Fprintln(os.Stderr, err.Error())
			}
			trace.Flush()
			os.Exit(1)
		}
		trace.Flush()
		return
	}
	if err := newRootCmd().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "podnet",
		Short:         "podnet: CNI plugins, node agent and lab for Kubernetes and other CNI runtimes",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(newPluginsCmd(), newCNICmd(), newBenchCmd(), newTraceCmd(), newDemoCmd(), newReapCmd(), newHeavyCmd("agent", "run the node agent (exec's podnet-agent)"), newHeavyCmd("lab", "a podnet cluster in network namespaces: up, status, check, exec, down, demo (exec's podnet-agent)"),
		newHeavyCmd("policy", "NetworkPolicy: explain a verdict, dump a node's compiled rules (exec's podnet-agent)"))
	return root
}

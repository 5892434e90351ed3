package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/lab"
)

// newLabCNPCmd is `lab conformance-cnp`: the ClusterNetworkPolicy
// conformance suite of sigs.k8s.io/network-policy-api against a
// --kubernetes lab (docs/conformance/README.md).
func newLabCNPCmd(name, root *string) *cobra.Command {
	var o lab.CNPOptions
	c := &cobra.Command{
		Use:   "conformance-cnp [--run RE] [--report FILE]",
		Short: "run the ClusterNetworkPolicy conformance suite (network-policy-api " + lab.CNPAPIVersion + ") against a --kubernetes lab; prints a pass/fail table, non-zero exit on any failure",
		Long: `lab conformance-cnp runs the suite binary tools/npconformance/build.sh builds
inside the lab's control plane namespace. Without --run it runs the whole
ClusterNetworkPolicy conformance profile and writes the upstream
ConformanceReport YAML to --report; with --run only the tests whose name matches
(e.g. 'CNPAdminTier.*TCP'), and no report. It applies the standard CRD when the
cluster has none, and needs 2 nodes and the agnhost:2.45 tag on them (the lab's
test images carry it). The 4 SCTP tests fail on a kernel without SCTP; the table
marks them. See docs/conformance/README.md.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(*root, *name)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			o.Out = os.Stdout
			_, err = l.ConformanceCNP(ctx, o)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&o.Run, "run", "", "run only the tests matching this regular expression (no report)")
	f.StringVar(&o.Report, "report", "", "the report YAML (default bin/conformance/podnet-VERSION.yaml; the log goes beside it as .log)")
	f.StringVar(&o.Version, "version", "", "the podnet version the report names (default: git describe --tags --always --dirty)")
	f.StringVar(&o.Contact, "contact", "", "the report's contact (default the podnet issue tracker)")
	f.StringVar(&o.SupportedFeatures, "supported-features", "", "experimental features to test too (ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers)")
	f.DurationVar(&o.Timeout, "timeout", 45*time.Minute, "the suite's -test.timeout")
	return c
}

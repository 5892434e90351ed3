package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/lab"
)

// newLabE2ECmd is `lab e2e`: the upstream Kubernetes network e2e specs
// against a --kubernetes lab (docs/e2e.md).
func newLabE2ECmd(name, root *string) *cobra.Command {
	var o lab.E2EOptions
	c := &cobra.Command{
		Use:   "e2e [--suite conformance|netpol] [--focus RE] [--skip RE]",
		Short: "run the upstream Kubernetes " + lab.KubeVersion + " network e2e specs (ginkgo) against a --kubernetes lab; prints a pass/fail table, non-zero exit on any failure",
		Long: `lab e2e runs ginkgo with the upstream e2e network suite (tools/kubernetes/build.sh
all builds both) inside the lab's control plane namespace, writes the JSON report
to --report-dir, and prints one line per spec (STATE SECONDS SPEC) and a SUMMARY
line. Suites: conformance (sig-network [Conformance]) and netpol (the upstream
NetworkPolicy specs). Default skips, each with its reason, are printed as
skipped rows; see docs/e2e.md.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(*root, *name)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			o.Out = os.Stdout
			_, err = l.E2E(ctx, o)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&o.Suite, "suite", "conformance", "conformance or netpol (\"\" with --focus: only the focus)")
	f.StringVar(&o.Focus, "focus", "", "ginkgo focus regular expression (replaces the suite's)")
	f.StringVar(&o.Skip, "skip", "", "ginkgo skip regular expression (added to the default skips)")
	f.BoolVar(&o.NoDefaultSkips, "no-default-skips", false, "also run what the default skips leave out (SCTP, DNS, ...)")
	f.IntVar(&o.Procs, "procs", 2, "ginkgo parallel processes")
	f.DurationVar(&o.Timeout, "timeout", 60*time.Minute, "ginkgo suite timeout")
	f.StringVar(&o.ReportDir, "report-dir", "", "where report.json and ginkgo.log go (default <lab dir>/e2e-SUITE-TIME, which lab down removes)")
	return c
}

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// E2E suites: which upstream specs `lab e2e --suite` selects (a ginkgo
// --focus regular expression) before E2ESkips removes some.
var E2ESuites = map[string]string{
	// Every sig-network [Conformance] spec: Networking Granular Checks,
	// Services, EndpointSlice, Proxy, the network APIs (and DNS, skipped
	// below while the lab has no cluster DNS).
	"conformance": `\[sig-network\].*\[Conformance\]`,
	// The upstream NetworkPolicy specs (test/e2e/network/netpol).
	"netpol": `\[sig-network\] Netpol`,
}

// E2ESkip is a default skip of `lab e2e`: specs whose full name matches
// Pattern (a ginkgo --skip regular expression) are not run, for Reason.
type E2ESkip struct {
	Pattern string
	Reason  string
}

// E2ESkips are the default skips of `lab e2e`, for every suite: what a lab
// cluster cannot run, not what podnet fails (docs/e2e.md has the
// evidence from running them).
var E2ESkips = []E2ESkip{
	{`\[Feature:SCTPConnectivity\]|: sctp`, "no SCTP sockets on this kernel (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): protocol not supported); the two Netpol specs 'even if the plugin doesn't support SCTP' send only TCP and do run"},
	{`\[sig-network\] DNS `, "the lab has no cluster DNS (no CoreDNS behind kubelet's clusterDNS 10.96.0.10)"},
	{`\[sig-network\] Services should (serve a basic endpoint from pods|serve multiport endpoints from pods|be able to create a functioning NodePort service|be able to change the type from|have session affinity work for|be able to switch session affinity for)`,
		"needs cluster DNS: TestJig.CheckServiceReachability dials the service by name (nc NAME PORT) before its ClusterIP; the lab has no DNS"},
	// No spec of either suite matches this today; it keeps --focus runs
	// away from what a lab cannot have.
	{`LoadBalancer`, "needs a cloud provider or a load balancer implementation; the lab has neither"},
}

// E2EOptions are the options of Lab.E2E.
type E2EOptions struct {
	// Suite is a key of E2ESuites; "" runs Focus alone.
	Suite string
	// Focus replaces the suite's focus; Skip adds to E2ESkips.
	Focus, Skip string
	// NoDefaultSkips runs what E2ESkips would skip.
	NoDefaultSkips bool
	// Procs is ginkgo's --procs (default 2); Timeout its suite --timeout
	// (default 60m).
	Procs   int
	Timeout time.Duration
	// ReportDir receives report.json and ginkgo.log (default
	// <lab dir>/e2e-<suite>-<time>; note `lab down` removes the lab dir).
	ReportDir string
	// Out receives progress and the result table.
	Out io.Writer
}

// E2ESpec is one spec of a ginkgo JSON report, as `lab e2e` tabulates it.
type E2ESpec struct {
	Name     string
	State    string // passed, failed, skipped, pending, panicked, interrupted, aborted, timedout
	Duration time.Duration
	// Node is the ginkgo node type ("It" for a spec, else a suite node
	// such as SynchronizedBeforeSuite).
	Node string
	// Message is the failure (or runtime skip) message, Location where.
	Message, Location string
}

// Failed reports whether the spec's state counts as a failure.
func (s E2ESpec) Failed() bool {
	switch s.State {
	case "passed", "skipped", "pending":
		return false
	}
	return true
}

// ginkgo's JSON report (github.com/onsi/ginkgo/v2/types): a list of suite
// reports; only the fields `lab e2e` reads.
type ginkgoReport struct {
	SuiteDescription string
	SuiteSucceeded   bool
	RunTime          time.Duration
	SpecReports      []struct {
		ContainerHierarchyTexts []string
		LeafNodeType            string
		LeafNodeText            string
		State                   string
		RunTime                 time.Duration
		Failure                 struct {
			Message  string
			Location struct {
				FileName   string
				LineNumber int
			}
		}
	}
}

// E2EReport is a parsed ginkgo JSON report.
type E2EReport struct {
	Succeeded bool
	RunTime   time.Duration
	Specs     []E2ESpec
}

// ParseE2EReport reads a ginkgo --json-report file.
func ParseE2EReport(r io.Reader) (*E2EReport, error) {
	var reports []ginkgoReport
	if err := json.NewDecoder(r).Decode(&reports); err != nil {
		return nil, fmt.Errorf("ginkgo JSON report: %w", err)
	}
	if len(reports) == 0 {
		return nil, fmt.Errorf("ginkgo JSON report: no suite")
	}
	out := &E2EReport{Succeeded: true}
	for _, rep := range reports {
		out.Succeeded = out.Succeeded && rep.SuiteSucceeded
		out.RunTime += rep.RunTime
		for _, sr := range rep.SpecReports {
			name := strings.TrimSpace(strings.Join(append(append([]string{}, sr.ContainerHierarchyTexts...), sr.LeafNodeText), " "))
			if name == "" {
				name = "[" + sr.LeafNodeType + "]"
			}
			s := E2ESpec{Name: name, State: sr.State, Duration: sr.RunTime, Node: sr.LeafNodeType, Message: sr.Failure.Message}
			if sr.Failure.Location.FileName != "" {
				s.Location = fmt.Sprintf("%s:%d", sr.Failure.Location.FileName, sr.Failure.Location.LineNumber)
			}
			out.Specs = append(out.Specs, s)
		}
	}
	return out, nil
}

// E2ERow is one line of the result table.
type E2ERow struct {
	E2ESpec
	// Reason of a skip: the E2ESkips entry, or the spec's own skip
	// message.
	Reason string
}

// E2ETable selects the rows worth showing from a report: every spec that
// ran, every suite node that failed, and the specs the suite's focus
// selected that a default skip removed (with its reason). Specs the focus
// never selected are left out. Rows are sorted by name.
func E2ETable(rep *E2EReport, focus string, skips []E2ESkip) ([]E2ERow, error) {
	var fre *regexp.Regexp
	if focus != "" {
		var err error
		if fre, err = regexp.Compile(focus); err != nil {
			return nil, fmt.Errorf("focus %q: %w", focus, err)
		}
	}
	res := make([]*regexp.Regexp, len(skips))
	for i, s := range skips {
		var err error
		if res[i], err = regexp.Compile(s.Pattern); err != nil {
			return nil, fmt.Errorf("skip %q: %w", s.Pattern, err)
		}
	}
	var rows []E2ERow
	for _, s := range rep.Specs {
		if s.Node != "It" {
			if s.Failed() {
				rows = append(rows, E2ERow{E2ESpec: s})
			}
			continue
		}
		if s.State != "skipped" || s.Message != "" {
			rows = append(rows, E2ERow{E2ESpec: s, Reason: firstLine(s.Message)})
			continue
		}
		if fre != nil && !fre.MatchString(s.Name) {
			continue
		}
		for i, re := range res {
			if re.MatchString(s.Name) {
				rows = append(rows, E2ERow{E2ESpec: s, Reason: skips[i].Reason})
				break
			}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

// E2ECounts counts rows by outcome.
type E2ECounts struct{ Passed, Failed, Skipped int }

// CountE2E counts rows: failed is every failing state.
func CountE2E(rows []E2ERow) E2ECounts {
	var c E2ECounts
	for _, r := range rows {
		switch {
		case r.State == "passed":
			c.Passed++
		case r.Failed():
			c.Failed++
		default:
			c.Skipped++
		}
	}
	return c
}

// WriteE2ETable prints the table (STATE, SECONDS, SPEC, then a skip's
// reason after " # ") and, for each failure, its message's first lines.
func WriteE2ETable(w io.Writer, rows []E2ERow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tSECONDS\tSPEC")
	for _, r := range rows {
		line := fmt.Sprintf("%s\t%.1f\t%s", r.State, r.Duration.Seconds(), r.Name)
		if r.Reason != "" && !r.Failed() {
			line += "  # " + r.Reason
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if !r.Failed() {
			continue
		}
		fmt.Fprintf(w, "\nFAILED %s\n  at %s\n", r.Name, r.Location)
		for _, l := range headLines(r.Message, 6) {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func headLines(s string, n int) []string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = append(ls[:n], "...")
	}
	return ls
}

// E2EBinaries are the ginkgo CLI and the network e2e suite
// tools/kubernetes/build.sh builds into the lab's BinDir.
func (k *Kube) E2EBinaries() (ginkgo, suite string) {
	return k.bin("ginkgo"), filepath.Join(k.BinDir, "e2e-network-"+KubeVersion+".test")
}

// E2EResult is what Lab.E2E ran and found.
type E2EResult struct {
	ReportDir string
	Rows      []E2ERow
	Counts    E2ECounts
	Wall      time.Duration
}

// E2E runs the upstream Kubernetes e2e network suite against a
// --kubernetes lab: ginkgo in the control plane's namespace (which routes
// to every pod CIDR) runs the suite's specs, the JSON report is written to
// o.ReportDir, and the result table and a summary line are printed. The
// error is non-nil when a selected spec failed or the run broke.
func (l *Lab) E2E(ctx context.Context, o E2EOptions) (*E2EResult, error) {
	if l.Kubernetes == nil {
		return nil, fmt.Errorf("lab %s was not started with --kubernetes: `lab e2e` needs a Kubernetes lab", l.Name)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	focus := o.Focus
	if focus == "" {
		if o.Suite == "" {
			return nil, fmt.Errorf("give --suite (%s) or --focus", suiteNames())
		}
		f, ok := E2ESuites[o.Suite]
		if !ok {
			return nil, fmt.Errorf("--suite %q: one of %s", o.Suite, suiteNames())
		}
		focus = f
	} else if o.Suite != "" {
		if _, ok := E2ESuites[o.Suite]; !ok {
			return nil, fmt.Errorf("--suite %q: one of %s", o.Suite, suiteNames())
		}
	}
	var skips []E2ESkip
	if !o.NoDefaultSkips {
		skips = append(skips, E2ESkips...)
	}
	if o.Skip != "" {
		skips = append(skips, E2ESkip{Pattern: o.Skip, Reason: "--skip"})
	}
	for _, re := range append([]string{focus}, skipPatterns(skips)...) {
		if _, err := regexp.Compile(re); err != nil {
			return nil, fmt.Errorf("regular expression %q: %w", re, err)
		}
	}
	if o.Procs <= 0 {
		o.Procs = 2
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Minute
	}
	name := o.Suite
	if name == "" {
		name = "focus"
	}
	if o.ReportDir == "" {
		o.ReportDir = filepath.Join(l.Dir, fmt.Sprintf("e2e-%s-%s", name, time.Now().Format("20060102-150405")))
	}
	dir, err := filepath.Abs(o.ReportDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ginkgo, suite := l.Kubernetes.E2EBinaries()
	for _, b := range []string{ginkgo, suite} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("no %s: build it with `tools/kubernetes/build.sh all`", b)
		}
	}
	reportPath := filepath.Join(dir, "report.json")
	_ = os.Remove(reportPath)
	args := []string{
		"--procs=" + fmt.Sprint(o.Procs), "--timeout=" + o.Timeout.String(), "--no-color",
		"--focus=" + focus,
	}
	if sp := skipPatterns(skips); len(sp) > 0 {
		args = append(args, "--skip="+strings.Join(sp, "|"))
	}
	args = append(args, "--output-dir="+dir, "--json-report=report.json", suite, "--",
		"--kubeconfig="+l.Kubernetes.Kubeconfig, "--provider=local", "--e2e-verify-service-account=false",
		// The specs exec kubectl: the lab's, not whatever is in PATH.
		"--kubectl-path="+l.Kubernetes.bin("kubectl"))
	logPath := filepath.Join(dir, "ginkgo.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "# %s %s\n", ginkgo, shellJoin(args))
	cmd := exec.CommandContext(ctx, ginkgo, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// On cancel, interrupt ginkgo so it stops its processes and still
	// writes the report; its cleanup (deleting the specs' namespaces) took
	// over 2 minutes on a loaded machine, hence the long WaitDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Minute
	fmt.Fprintf(o.Out, "e2e %s: ginkgo --procs=%d --timeout=%s in netns %s (focus '%s', %d default skips); log %s\n",
		name, o.Procs, o.Timeout, l.Kubernetes.ControlPlane.Netns, focus, len(skips), logPath)
	start := time.Now()
	if err := startIn(NetnsPath(l.Kubernetes.ControlPlane.Netns), cmd); err != nil {
		return nil, err
	}
	runErr := cmd.Wait()
	wall := time.Since(start)
	f, err := os.Open(reportPath)
	if err != nil {
		return nil, fmt.Errorf("ginkgo (%v) wrote no report %s: see %s", runErr, reportPath, logPath)
	}
	defer f.Close()
	rep, err := ParseE2EReport(f)
	if err != nil {
		return nil, err
	}
	rows, err := E2ETable(rep, focus, skips)
	if err != nil {
		return nil, err
	}
	res := &E2EResult{ReportDir: dir, Rows: rows, Counts: CountE2E(rows), Wall: wall}
	if err := WriteE2ETable(o.Out, rows); err != nil {
		return res, err
	}
	c := res.Counts
	verdict := "PASS"
	if c.Failed > 0 || !rep.Succeeded || runErr != nil {
		verdict = "FAIL"
	}
	fmt.Fprintf(o.Out, "\nSUMMARY %s suite=%s passed=%d failed=%d skipped=%d duration=%s report=%s\n",
		verdict, name, c.Passed, c.Failed, c.Skipped, wall.Round(time.Second), reportPath)
	switch {
	case c.Failed > 0:
		return res, fmt.Errorf("e2e %s: %d of %d specs failed", name, c.Failed, c.Passed+c.Failed)
	case c.Passed == 0:
		return res, fmt.Errorf("e2e %s: no spec ran (focus %q); see %s", name, focus, logPath)
	case !rep.Succeeded || runErr != nil:
		return res, fmt.Errorf("e2e %s: the suite did not succeed (ginkgo: %v); see %s", name, runErr, logPath)
	}
	return res, nil
}

func skipPatterns(skips []E2ESkip) []string {
	var out []string
	for _, s := range skips {
		out = append(out, s.Pattern)
	}
	return out
}

func suiteNames() string {
	var n []string
	for k := range E2ESuites {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"|\\[]()*?$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

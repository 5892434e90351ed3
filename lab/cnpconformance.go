package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The ClusterNetworkPolicy conformance suite (sigs.k8s.io/network-policy-api)
// that `lab conformance-cnp` runs: tools/npconformance/build.sh builds it into
// the lab's BinDir with the API's standard CRD beside it.
const (
	CNPAPIVersion = "v0.3.0"
	// CNPImage is the one image the suite's pods run; the lab's agnhost
	// tarball carries this tag too (tools/image).
	CNPImage = "registry.k8s.io/e2e-test-images/agnhost:2.45"
	cnpCRD   = "clusternetworkpolicies.policy.networking.k8s.io"
)

// CNPKnownFailures are standard tests of the suite a lab cluster cannot
// pass whatever podnet does, with the reason. The suite has no flag to
// exempt a single test (its SkipTests option is not wired to a flag, and
// the ClusterNetworkPolicy profile allows no optional test), so they run
// and fail; the table marks them.
var CNPKnownFailures = map[string]string{
	"CNPAdminTierEgressSCTP":     cnpNoSCTP,
	"CNPAdminTierIngressSCTP":    cnpNoSCTP,
	"CNPBaselineTierEgressSCTP":  cnpNoSCTP,
	"CNPBaselineTierIngressSCTP": cnpNoSCTP,
}

const cnpNoSCTP = "no SCTP sockets on this kernel (protocol not supported): nothing serves SCTP and the probe (agnhost connect --protocol=sctp) fails in the client"

// CNPOptions are the options of Lab.ConformanceCNP.
type CNPOptions struct {
	// Run selects tests by ShortName (a regular expression, e.g.
	// "CNPAdminTier.*TCP"): they run under TestConformance, which writes
	// no profile report. "" runs the ClusterNetworkPolicy profile
	// (TestConformanceProfiles), which does.
	Run string
	// Report is where the profile report (YAML) goes (default
	// bin/conformance/podnet-<version>.yaml); the test log goes beside it
	// with the extension .log.
	Report string
	// Version is the implementation version in the report (default: `git
	// describe --tags --always --dirty` here, else the binary's VCS
	// revision, else "dev").
	Version string
	// Contact is the report's contact list; SupportedFeatures the suite's
	// --supported-features (experimental features podnet claims).
	Contact, SupportedFeatures string
	// Timeout is the test binary's -test.timeout (default 45m).
	Timeout time.Duration
	// Out receives progress and the result table.
	Out io.Writer
}

// CNPTest is one test's result from the `go test -v` output.
type CNPTest struct {
	Name     string // ShortName, e.g. CNPAdminTierIngressTCP
	Result   string // PASS, FAIL or SKIP
	Duration time.Duration
	// Known is the CNPKnownFailures reason of a failure.
	Known string
}

// CNPResult is what Lab.ConformanceCNP ran and found.
type CNPResult struct {
	Tests          []CNPTest
	Passed, Failed int
	Skipped        int
	// Setup is the suite's setup time: from start to the first test's
	// start.
	Setup       time.Duration
	Wall        time.Duration
	Report, Log string
	ProfileMode bool
	// SuiteFailure is the output's last lines when no test started.
	SuiteFailure string
}

// cnpLine matches a test's result line of `go test -v` (not its cases'
// deeper ones): "    --- PASS: TestConformanceProfiles/CNPAdminTierIngressTCP
// (12.34s)". go test prints them only when the top-level test ends.
var cnpLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (TestConformance(?:Profiles)?)/([^/\s]+) \(([0-9.]+)s\)`)

// cnpRunLine matches a test's start: "=== RUN   TestConformanceProfiles/CNPAdminTierIngressTCP".
var cnpRunLine = regexp.MustCompile(`^=== RUN\s+TestConformance(?:Profiles)?/([^/\s]+)$`)

// cnpTopLine matches the top-level test's result line.
var cnpTopLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (TestConformance(?:Profiles)?) \(([0-9.]+)s\)`)

// ParseCNPOutput reads `go test -v` output of the suite and returns the
// subtests' results in order, and the top-level result ("" if none).
func ParseCNPOutput(r io.Reader) (tests []CNPTest, top string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		if t, ok := parseCNPLine(sc.Text()); ok {
			tests = append(tests, t)
		} else if m := cnpTopLine.FindStringSubmatch(sc.Text()); m != nil {
			top = m[1]
		}
	}
	return tests, top, sc.Err()
}

func parseCNPLine(s string) (CNPTest, bool) {
	m := cnpLine.FindStringSubmatch(s)
	if m == nil {
		return CNPTest{}, false
	}
	secs, _ := strconv.ParseFloat(m[4], 64)
	t := CNPTest{Name: m[3], Result: m[1], Duration: time.Duration(secs * float64(time.Second))}
	if t.Result == "FAIL" {
		t.Known = CNPKnownFailures[t.Name]
	}
	return t, true
}

// WriteCNPTable prints one line per test (RESULT, SECONDS, TEST, and a
// known failure's reason after " # ").
func WriteCNPTable(w io.Writer, tests []CNPTest) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tSECONDS\tTEST")
	for _, t := range tests {
		line := fmt.Sprintf("%s\t%.1f\t%s", t.Result, t.Duration.Seconds(), t.Name)
		if t.Known != "" {
			line += "  # known: " + t.Known
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// CNPVersion is the implementation version a report names: git describe
// in the current directory, else the binary's VCS revision, else "dev".
func CNPVersion(ctx context.Context) string {
	if out, err := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		if v := strings.TrimSpace(string(out)); v != "" {
			return v
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "dev"
}

// CNPBinaries are the suite binary and the standard CRD
// tools/npconformance/build.sh caches in the lab's BinDir.
func (k *Kube) CNPBinaries() (suite, crd string) {
	return filepath.Join(k.BinDir, "np-conformance-"+CNPAPIVersion+".test"),
		filepath.Join(k.BinDir, "np-conformance-"+CNPAPIVersion+"-crd.yaml")
}

// ConformanceCNP runs the ClusterNetworkPolicy conformance suite of
// sigs.k8s.io/network-policy-api against a --kubernetes lab: it checks
// that every node has the suite's image, installs the standard CRD when
// the cluster has none, runs the suite binary in the control plane's
// namespace (KUBECONFIG and --kubeconfig: the suite's exec client reads
// only the former), writes its log (and, for the whole profile, the
// report), and prints the result table and a SUMMARY line. The error is
// non-nil when a test failed or the run broke.
func (l *Lab) ConformanceCNP(ctx context.Context, o CNPOptions) (*CNPResult, error) {
	if l.Kubernetes == nil {
		return nil, fmt.Errorf("lab %s was not started with --kubernetes: `lab conformance-cnp` needs a Kubernetes lab", l.Name)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Run != "" {
		if _, err := regexp.Compile(o.Run); err != nil {
			return nil, fmt.Errorf("--run %q: %w", o.Run, err)
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 45 * time.Minute
	}
	if o.Version == "" {
		o.Version = CNPVersion(ctx)
	}
	if o.Contact == "" {
		o.Contact = "https://github.com/podnet/podnet/issues"
	}
	if o.Report == "" {
		o.Report = filepath.Join("bin", "conformance", "podnet-"+o.Version+".yaml")
	}
	report, err := filepath.Abs(o.Report)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
		return nil, err
	}
	logPath := strings.TrimSuffix(report, filepath.Ext(report)) + ".log"
	suiteBin, crd := l.Kubernetes.CNPBinaries()
	for _, f := range []string{suiteBin, crd} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("no %s: build it with `tools/npconformance/build.sh`", f)
		}
	}
	if err := l.cnpCheckImage(ctx); err != nil {
		return nil, err
	}
	if err := l.cnpEnsureCRD(ctx, crd, o.Out); err != nil {
		return nil, err
	}
	if err := l.cnpWaitNamespacesGone(ctx, o.Out); err != nil {
		return nil, err
	}

	res := &CNPResult{Log: logPath, ProfileMode: o.Run == ""}
	kc := l.Kubernetes.Kubeconfig
	args := []string{"-test.v", "-test.timeout=" + o.Timeout.String(), "--kubeconfig=" + kc}
	if o.SupportedFeatures != "" {
		args = append(args, "--supported-features="+o.SupportedFeatures)
	}
	if res.ProfileMode {
		_ = os.Remove(report)
		res.Report = report
		args = append(args, "-test.run=^TestConformanceProfiles$",
			"--conformance-profiles=ClusterNetworkPolicy",
			"--organization=podnet", "--project=podnet", "--url=https://github.com/podnet/podnet",
			"--version="+o.Version, "--contact="+o.Contact,
			"--additional-info="+fmt.Sprintf("podnet lab (podnet-agent lab conformance-cnp, Kubernetes %s, %d nodes), %s", KubeVersion, len(l.Nodes), time.Now().UTC().Format("2006-01-02")),
			"--report-output="+report)
	} else {
		// In parentheses: go test splits -run at a top-level '|' too.
		args = append(args, "-test.run=^TestConformance$/("+o.Run+")")
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "# KUBECONFIG=%s %s %s\n", kc, suiteBin, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, suiteBin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kc)
	cmd.Dir = filepath.Dir(report)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// On cancel, interrupt: the test binary then fails the running test,
	// runs its cleanups and exits.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 2 * time.Minute
	what := "the ClusterNetworkPolicy profile (report " + report + ")"
	if !res.ProfileMode {
		what = "tests matching " + o.Run + " (no report: only the whole profile writes one)"
	}
	fmt.Fprintf(o.Out, "conformance-cnp: network-policy-api %s suite, %s, in netns %s; log %s\n",
		CNPAPIVersion, what, l.Kubernetes.ControlPlane.Netns, logPath)
	start := time.Now()
	if err := startIn(NetnsPath(l.Kubernetes.ControlPlane.Netns), cmd); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	started := false
	var setupTail, setupErr []string
	errNext := false
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if m := cnpRunLine.FindStringSubmatch(line); m != nil {
				if !started {
					started, res.Setup = true, time.Since(start)
					fmt.Fprintf(o.Out, "  setup done in %s\n", res.Setup.Round(time.Second))
				}
				fmt.Fprintf(o.Out, "  %s running %s\n", time.Since(start).Round(time.Second), m[1])
			} else if t, ok := parseCNPLine(line); ok {
				res.Tests = append(res.Tests, t)
			} else if tl := strings.TrimSpace(line); !started && tl != "" {
				// Before any test: a setup failure's testify "Error:" and
				// the line after it, else the last lines.
				if errNext || strings.HasPrefix(tl, "Error:") {
					setupErr = append(setupErr, tl)
				}
				errNext = strings.HasPrefix(tl, "Error:")
				if setupTail = append(setupTail, tl); len(setupTail) > 4 {
					setupTail = setupTail[1:]
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	runErr := cmd.Wait()
	pw.Close()
	<-done
	res.Wall = time.Since(start)
	if !started {
		if len(setupErr) > 0 {
			setupTail = setupErr
		}
		res.SuiteFailure = strings.Join(setupTail, "\n")
	}
	fmt.Fprintln(o.Out)
	if err := WriteCNPTable(o.Out, res.Tests); err != nil {
		return res, err
	}
	known := 0
	for _, t := range res.Tests {
		switch t.Result {
		case "PASS":
			res.Passed++
		case "FAIL":
			res.Failed++
			if t.Known != "" {
				known++
			}
		default:
			res.Skipped++
		}
	}
	verdict := "PASS"
	if res.Failed > 0 || runErr != nil {
		verdict = "FAIL"
	}
	rep := "none"
	if res.ProfileMode {
		if _, err := os.Stat(report); err == nil {
			rep = report
		} else {
			rep = "not written"
		}
	}
	fmt.Fprintf(o.Out, "\nSUMMARY %s passed=%d failed=%d (known %d) skipped=%d setup=%s duration=%s report=%s log=%s\n",
		verdict, res.Passed, res.Failed, known, res.Skipped, res.Setup.Round(time.Second), res.Wall.Round(time.Second), rep, logPath)
	switch {
	case res.Failed > 0:
		return res, fmt.Errorf("conformance-cnp: %d of %d tests failed (%d known); see %s", res.Failed, res.Passed+res.Failed, known, logPath)
	case runErr != nil && len(res.Tests) == 0:
		return res, fmt.Errorf("conformance-cnp: the suite failed before any test (%v): %s; see %s", runErr, strings.TrimSpace(res.SuiteFailure), logPath)
	case runErr != nil:
		return res, fmt.Errorf("conformance-cnp: the suite failed (%v); see %s", runErr, logPath)
	case res.Passed == 0:
		return res, fmt.Errorf("conformance-cnp: no test ran; see %s", logPath)
	}
	return res, nil
}

// cnpCheckImage fails unless every node reports the suite's image: its
// pods would otherwise wait for a pull the lab cannot do until the suite's
// setup times out (5 minutes).
func (l *Lab) cnpCheckImage(ctx context.Context) error {
	cs, err := l.KubeClient()
	if err != nil {
		return err
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(list.Items) < 2 {
		return fmt.Errorf("%d node(s): the suite's hostNetwork pods need 2 (lab up --nodes 2)", len(list.Items))
	}
	var nodes []string
	for _, n := range list.Items {
		has := false
		for _, im := range n.Status.Images {
			for _, nm := range im.Names {
				has = has || nm == CNPImage
			}
		}
		if !has {
			nodes = append(nodes, n.Name)
		}
	}
	if len(nodes) > 0 {
		return fmt.Errorf("node(s) %s lack %s: rebuild the test images (tools/image/test-images.sh tags agnhost also as 2.45) and start the lab again", strings.Join(nodes, ", "), CNPImage)
	}
	return nil
}

// cnpEnsureCRD applies the standard ClusterNetworkPolicy CRD when the
// cluster has none (podnet's manifest may bring its own), then waits until
// it is Established.
func (l *Lab) cnpEnsureCRD(ctx context.Context, crd string, out io.Writer) error {
	if _, err := l.kubectlOutput(ctx, "get", "crd", cnpCRD); err != nil {
		fmt.Fprintf(out, "conformance-cnp: no %s CRD: applying %s\n", cnpCRD, crd)
		if _, err := l.kubectlOutput(ctx, "apply", "-f", crd); err != nil {
			return err
		}
	}
	// Not `kubectl wait`: it fails at once while a new CRD has no status.
	var last string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		out, err := l.kubectlOutput(ctx, "get", "crd", cnpCRD, "-o", `jsonpath={.status.conditions[?(@.type=="Established")].status}`)
		if err == nil && strings.TrimSpace(string(out)) == "True" {
			return nil
		}
		last = strings.TrimSpace(string(out))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("CRD %s not Established after 1m (%s)", cnpCRD, last)
}

// cnpNamespacePrefix starts the names of the suite's namespaces.
const cnpNamespacePrefix = "network-policy-conformance-"

// cnpWaitNamespacesGone waits (up to 3 minutes) until no namespace of a
// previous run is left terminating: the suite's setup fails at once
// creating its StatefulSets in one ("being terminated"). Namespaces left
// by a run with --cleanup-base-resources=false (not terminating) are
// reused, as the suite does.
func (l *Lab) cnpWaitNamespacesGone(ctx context.Context, out io.Writer) error {
	cs, err := l.KubeClient()
	if err != nil {
		return err
	}
	said := false
	for deadline := time.Now().Add(3 * time.Minute); ; {
		list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var term []string
		for _, ns := range list.Items {
			if strings.HasPrefix(ns.Name, cnpNamespacePrefix) && ns.DeletionTimestamp != nil {
				term = append(term, ns.Name)
			}
		}
		if len(term) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespaces of a previous run still terminating after 3m: %s", strings.Join(term, ", "))
		}
		if !said {
			fmt.Fprintf(out, "conformance-cnp: waiting for %d namespaces of a previous run to be deleted\n", len(term))
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

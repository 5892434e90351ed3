package lab

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// e2eGolden is a ginkgo v2 --json-report cut down from a real `lab e2e`
// run: one passed, one failed and one filter-skipped spec per kind, a
// default-skipped one, a runtime skip (e2eskipper) and the suite nodes.
const e2eGolden = `[
  {
    "SuitePath": "/var/cache/podnet-test",
    "SuiteDescription": "Kubernetes e2e suite",
    "SuiteSucceeded": false,
    "RunTime": 301000000000,
    "SpecReports": [
      {"ContainerHierarchyTexts": null, "LeafNodeType": "SynchronizedBeforeSuite", "LeafNodeText": "", "State": "passed", "RunTime": 1200000000, "Failure": {}},
      {"ContainerHierarchyTexts": ["[sig-network] Networking", "Granular Checks: Pods"], "LeafNodeType": "It",
       "LeafNodeText": "should function for intra-pod communication: http [NodeConformance] [Conformance]",
       "State": "passed", "RunTime": 14250000000, "Failure": {}},
      {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeType": "It",
       "LeafNodeText": "should serve endpoints on same port and different protocols [Conformance]",
       "State": "failed", "RunTime": 125500000000,
       "Failure": {"Message": "service is not reachable within 2m0s timeout on endpoint 10.96.3.4:80 over TCP protocol\nsecond line", "Location": {"FileName": "k8s.io/kubernetes/test/e2e/network/service.go", "LineNumber": 3801}}},
      {"ContainerHierarchyTexts": ["[sig-network] Networking", "Granular Checks: Pods"], "LeafNodeType": "It",
       "LeafNodeText": "should function for intra-pod communication: sctp [LinuxOnly][Feature:SCTPConnectivity]",
       "State": "skipped", "RunTime": 0, "Failure": {}},
      {"ContainerHierarchyTexts": ["[sig-storage] EmptyDir volumes"], "LeafNodeType": "It",
       "LeafNodeText": "should support (root,0644,tmpfs) [LinuxOnly] [NodeConformance] [Conformance]",
       "State": "skipped", "RunTime": 0, "Failure": {}},
      {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeType": "It",
       "LeafNodeText": "should have session affinity work for LoadBalancer service [Conformance]",
       "State": "skipped", "RunTime": 3000000000,
       "Failure": {"Message": "Only supported for providers [gce gke aws azure] (not local)", "Location": {"FileName": "service.go", "LineNumber": 2300}}},
      {"ContainerHierarchyTexts": null, "LeafNodeType": "SynchronizedAfterSuite", "LeafNodeText": "", "State": "passed", "RunTime": 300000000, "Failure": {}}
    ]
  }
]`

func TestParseE2EReport(t *testing.T) {
	rep, err := ParseE2EReport(strings.NewReader(e2eGolden))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Succeeded || rep.RunTime != 301*time.Second || len(rep.Specs) != 7 {
		t.Fatalf("report: succeeded %v, runtime %s, %d specs", rep.Succeeded, rep.RunTime, len(rep.Specs))
	}
	s := rep.Specs[1]
	if s.Name != "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]" ||
		s.State != "passed" || s.Duration != 14250*time.Millisecond || s.Node != "It" {
		t.Errorf("spec 1: %+v", s)
	}
	if f := rep.Specs[2]; !f.Failed() || f.Location != "k8s.io/kubernetes/test/e2e/network/service.go:3801" {
		t.Errorf("spec 2: %+v", f)
	}
	if rep.Specs[0].Name != "[SynchronizedBeforeSuite]" {
		t.Errorf("suite node name %q", rep.Specs[0].Name)
	}
	if _, err := ParseE2EReport(strings.NewReader("[]")); err == nil {
		t.Error("empty report parsed")
	}
	if _, err := ParseE2EReport(strings.NewReader("{")); err == nil {
		t.Error("broken report parsed")
	}
}

func TestE2ETable(t *testing.T) {
	rep, err := ParseE2EReport(strings.NewReader(e2eGolden))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := E2ETable(rep, `\[sig-network\]`, E2ESkips)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.State+" "+r.Name)
	}
	want := []string{
		"passed [sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]",
		"skipped [sig-network] Networking Granular Checks: Pods should function for intra-pod communication: sctp [LinuxOnly][Feature:SCTPConnectivity]",
		"skipped [sig-network] Services should have session affinity work for LoadBalancer service [Conformance]",
		"failed [sig-network] Services should serve endpoints on same port and different protocols [Conformance]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c := CountE2E(rows); c != (E2ECounts{Passed: 1, Failed: 1, Skipped: 2}) {
		t.Errorf("counts %+v", c)
	}
	if !strings.Contains(rows[1].Reason, "SCTP") || !strings.HasPrefix(rows[2].Reason, "Only supported for providers") {
		t.Errorf("reasons %q, %q", rows[1].Reason, rows[2].Reason)
	}

	var b bytes.Buffer
	if err := WriteE2ETable(&b, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, re := range []string{
		`(?m)^STATE +SECONDS +SPEC$`,
		`(?m)^passed +14\.2 +\[sig-network\] Networking Granular Checks: Pods should function for intra-pod communication: http `,
		`(?m)^failed +125\.5 +\[sig-network\] Services should serve endpoints`,
		`(?m)^skipped +0\.0 +.*sctp .*  # no SCTP sockets`,
		`(?m)^FAILED \[sig-network\] Services should serve endpoints.*\n  at k8s.io/kubernetes/test/e2e/network/service.go:3801\n  service is not reachable`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("table does not match %s:\n%s", re, out)
		}
	}
}

// TestE2ESkips checks the default skips against real spec names: they
// remove what the lab cannot run and keep what it can.
func TestE2ESkips(t *testing.T) {
	var pats []string
	for _, s := range E2ESkips {
		if s.Reason == "" {
			t.Errorf("skip %q has no reason", s.Pattern)
		}
		pats = append(pats, s.Pattern)
	}
	skip := regexp.MustCompile(strings.Join(pats, "|"))
	for name, skipped := range map[string]bool{
		"[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP should enforce policy based on Ports [Feature:NetworkPolicy]":                            true,
		"[sig-network] Netpol NetworkPolicy between server and client should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP [Feature:NetworkPolicy]":          false,
		"[sig-network] Netpol NetworkPolicy between server and client should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP [Feature:NetworkPolicy]": false,
		"[sig-network] DNS should provide DNS for services [Conformance]":                                                                                                                         true,
		"[sig-network] Services should serve a basic endpoint from pods [Conformance]":                                                                                                            true,
		"[sig-network] Services should be able to switch session affinity for NodePort service [LinuxOnly] [Conformance]":                                                                         true,
		"[sig-network] Services should serve endpoints on same port and different protocols [Conformance]":                                                                                        false,
		"[sig-network] Networking Granular Checks: Pods should function for node-pod communication: udp [LinuxOnly] [NodeConformance] [Conformance]":                                              false,
		"[sig-network] Networking Granular Checks: Pods should function for node-pod communication: sctp [LinuxOnly][Feature:SCTPConnectivity]":                                                   true,
		"[sig-network] Netpol NetworkPolicy between server and client should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector [Feature:NetworkPolicy]": false,
	} {
		if got := skip.MatchString(name); got != skipped {
			t.Errorf("skipped(%q) = %v, want %v", name, got, skipped)
		}
	}
	for suite, focus := range E2ESuites {
		if _, err := regexp.Compile(focus); err != nil {
			t.Errorf("suite %s: %v", suite, err)
		}
	}
}

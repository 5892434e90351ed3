package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/podnet/podnet/agent/datastore/etcd"
)

// TestBenchPolicyTiny runs every part of `lab bench-policy` at toy sizes:
// it finishes, prints each part's figures and the verdict, leaves no
// bench policy or simulated pod in etcd and no agent stopped.
func TestBenchPolicyTiny(t *testing.T) {
	l := upLab(t, VXLAN, 2, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	err := l.BenchPolicy(ctx, PolicyBenchOptions{Pods: 20, Policies: 10, Changes: 3, Rounds: 1, Seconds: 1, Adds: 2,
		ColdPods: 30, PauseAgents: true, Out: &out})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"noise rule:", "change -> enforced (ms): p50", "ratio with/without: RR", "added p99",
		"agent start -> first complete apply", "VERDICT: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output has no %q", want)
		}
	}
	cli, err := l.etcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, p := range []string{"networkpolicies/", "pods/pb-", "namespaces/pb-"} {
		resp, err := cli.Get(ctx, etcd.ObjectsPrefix("")+p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Errorf("%d objects left under %s", resp.Count, p)
		}
	}
	l, err = Load("", l.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.AgentPID))
		if err != nil {
			t.Fatalf("agent of %s: %v", n.Name, err)
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); f[0] == "T" {
			t.Errorf("agent of %s (pid %d) left stopped", n.Name, n.AgentPID)
			_ = syscall.Kill(n.AgentPID, syscall.SIGCONT)
		}
	}
}

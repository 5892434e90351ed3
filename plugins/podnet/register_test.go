package podnet

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/agent/podreg"
	"github.com/podnet/podnet/internal/cnierr"
)

func TestPodIdentity(t *testing.T) {
	ns, pod, ok := podIdentity("IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=api-0;K8S_POD_INFRA_CONTAINER_ID=abc")
	if !ok || ns != "web" || pod != "api-0" {
		t.Errorf("got %q %q %v", ns, pod, ok)
	}
	if _, _, ok := podIdentity("K8S_POD_NAMESPACE=web"); ok {
		t.Error("namespace without name accepted")
	}
	if _, _, ok := podIdentity(""); ok {
		t.Error("empty CNI_ARGS accepted")
	}
}

type slowAgent struct{ answer chan error }

func (s slowAgent) Register(ctx context.Context, r podreg.Registration) error {
	if !r.Wait {
		return nil
	}
	select {
	case err := <-s.answer:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (slowAgent) Unregister(string, string) {}

// TestRegisterFailsClosed: with the agent down, a pod in a namespace with
// policies gets code 11; one in a namespace without starts; with the agent
// up, the agent's refusal is code 11 and its answer lets the pod start.
func TestRegisterFailsClosed(t *testing.T) {
	dir := t.TempDir()
	reg := podreg.Registration{ContainerID: "c", IfName: "eth0", Namespace: "guarded", Name: "p", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.9")}}
	if err := register(dir, reg); err != nil {
		t.Fatalf("no agent, no namespaces file: %v", err)
	}
	if err := podreg.WriteNamespaces(dir, []string{"guarded"}); err != nil {
		t.Fatal(err)
	}
	code11 := func(err error) bool {
		var te *types.Error
		return errors.As(err, &te) && te.Code == cnierr.TryAgainLater
	}
	if err := register(dir, reg); !code11(err) || !strings.Contains(err.Error(), "NetworkPolicies") {
		t.Fatalf("agent down, namespace with policies: %v, want code 11", err)
	}
	open := reg
	open.Namespace = "open"
	if err := register(dir, open); err != nil {
		t.Fatalf("agent down, namespace without policies: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent := slowAgent{answer: make(chan error, 1)}
	go podreg.Serve(ctx, dir, agent)
	time.Sleep(100 * time.Millisecond)
	agent.answer <- errors.New("pod guarded/p is not in the datastore yet")
	if err := register(dir, reg); !code11(err) || !strings.Contains(err.Error(), "not in the datastore") {
		t.Fatalf("agent refuses: %v", err)
	}
	agent.answer <- nil
	if err := register(dir, reg); err != nil {
		t.Fatalf("agent answers: %v", err)
	}
}

package podreg

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeHandler struct {
	mu    sync.Mutex
	regs  []Registration
	unreg []string
	err   error
}

func (f *fakeHandler) Register(_ context.Context, r Registration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs = append(f.regs, r)
	return f.err
}

func (f *fakeHandler) Unregister(id, ifName string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unreg = append(f.unreg, id+"/"+ifName)
}

func TestRegisterRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg := Registration{ContainerID: "c1", IfName: "eth0", Namespace: "ns", Name: "p", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5")}, Wait: true}

	if err := Register(ctx, dir, reg); !errors.Is(err, ErrAgentDown) {
		t.Fatalf("no agent: got %v, want ErrAgentDown", err)
	}
	h := &fakeHandler{}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Serve(sctx, dir, h) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := Register(ctx, dir, reg)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrAgentDown) || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	h.mu.Lock()
	h.err = errors.New("pod ns/p is not known yet")
	h.mu.Unlock()
	if err := Register(ctx, dir, reg); err == nil || !strings.Contains(err.Error(), "not known yet") {
		t.Fatalf("refusal: %v", err)
	}
	if err := Register(ctx, dir, Registration{ContainerID: "c2"}); err == nil || !strings.Contains(err.Error(), "namespace and name") {
		t.Fatalf("invalid registration: %v", err)
	}
	if err := Unregister(ctx, dir, "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if len(h.regs) != 2 || h.regs[0].Key() != "ns/p" || h.regs[0].IPs[0] != reg.IPs[0] || !h.regs[0].Wait || len(h.unreg) != 1 || h.unreg[0] != "c1/eth0" {
		t.Errorf("handler saw %+v, %v", h.regs, h.unreg)
	}
	h.mu.Unlock()
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve returned %v", err)
	}
}

func TestNamespacesFile(t *testing.T) {
	dir := t.TempDir()
	if has, known, err := HasPolicies(dir, "a"); has || known || err != nil {
		t.Fatalf("no file: %v %v %v", has, known, err)
	}
	if err := WriteNamespaces(dir, []string{"b", "a", "b"}); err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if has, known, err := HasPolicies(dir, ns); has != want || !known || err != nil {
			t.Errorf("%s: %v %v %v", ns, has, known, err)
		}
	}
	if err := WriteNamespaces(dir, nil); err != nil {
		t.Fatal(err)
	}
	if has, known, _ := HasPolicies(dir, "a"); has || !known {
		t.Errorf("after clearing: %v %v", has, known)
	}
}

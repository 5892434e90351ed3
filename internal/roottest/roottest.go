// Package roottest is the one gate for tests that touch the kernel: they run
// only as root, each in network namespaces it creates here and that are
// removed when the test ends, pass or fail. Nothing here touches the root
// namespace.
package roottest

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netns"
)

var seq atomic.Int64

// Require skips t unless the process is root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (run `go test` as root, as CI does)")
	}
}

// NewNS creates a named network namespace with its loopback up, removed at
// the end of the test. It returns the name and the bind-mount path.
func NewNS(t testing.TB, prefix string) (name, path string) {
	t.Helper()
	Require(t)
	name = fmt.Sprintf("pnt-%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	p, err := netns.Create(name)
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	if err := netns.Do(p, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return name, p
}

// In runs fn inside the namespace at path and fails the test on error.
func In(t testing.TB, path string, fn func() error) {
	t.Helper()
	if err := netns.Do(path, fn); err != nil {
		t.Fatalf("in %s: %v", path, err)
	}
}

// Eventually retries fn every 200 ms until it succeeds or d has passed,
// then fails the test with what and fn's last error: for state that a
// reconcile loop or the kernel converges to, not at once.
func Eventually(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

package netns_test

import (
	"os"
	"testing"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

// Creating a namespace must not move any of the process's threads into it:
// otherwise the process pins the namespace (and everything in it) alive.
func TestCreateLeavesProcessInPlace(t *testing.T) {
	roottest.Require(t)
	before, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		roottest.NewNS(t, "ct")
	}
	after, _ := os.Readlink("/proc/self/ns/net")
	if after != before {
		t.Fatalf("main thread moved from %s to %s", before, after)
	}
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/task/" + e.Name() + "/ns/net")
		if err == nil && l != before {
			t.Fatalf("thread %s is in %s, not %s", e.Name(), l, before)
		}
	}
}

func TestDoRunsInside(t *testing.T) {
	_, p := roottest.NewNS(t, "do")
	var inside string
	if err := netns.Do(p, func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	outside, _ := os.Readlink("/proc/thread-self/ns/net")
	if inside == outside {
		t.Fatalf("Do did not switch namespace (%s) for %s (%v)", inside, p, st.Sys())
	}
}

package nxtest

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/netns"
)

// reapArg makes a test binary a reaper: DEL starts /proc/self/exe with it,
// as the podnet binary is started in production.
const reapArg = "reap-links"

// RunWithReaper is TestMain for packages whose DEL detaches links (bridge,
// ptp): the test binary is its own reaper. Started as a reaper it reaps
// and exits without running tests (so a reaper never starts reapers);
// otherwise it registers itself with mode "now" and runs m.
func RunWithReaper(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == reapArg {
		os.Exit(reaperMain(os.Args[2:]))
	}
	netlinkx.SetReaper(os.Args[0], reapArg, "now")
	os.Exit(m.Run())
}

// reaperMain runs in the reaper process: mode "now" reaps at once, "none"
// exits without reaping (a killed reaper), a duration reaps after it.
func reaperMain(args []string) int {
	first := 0
	for _, a := range args {
		switch {
		case a == "none":
			return 0
		case strings.HasPrefix(a, "--first="):
			first, _ = strconv.Atoi(strings.TrimPrefix(a, "--first="))
		default:
			if d, err := time.ParseDuration(a); err == nil {
				time.Sleep(d)
			}
		}
	}
	h, err := netlinkx.NewHandle()
	if err != nil {
		return 1
	}
	defer h.Close()
	if _, err := netlinkx.RunReaper(h, first); err != nil {
		return 1
	}
	return 0
}

// ReaperMode switches what the reaper processes DEL starts do ("now",
// "none", or a delay such as "1500ms") for the rest of the test.
func ReaperMode(t *testing.T, mode string) {
	netlinkx.SetReaper(os.Args[0], reapArg, mode)
	t.Cleanup(func() { netlinkx.SetReaper(os.Args[0], reapArg, "now") })
}

// WaitNoReaper waits (up to 10 s) until no reaper is at work in the
// namespace at path: a reaper a DEL started has exited, so the next DEL
// starts its own instead of leaving its link to that one.
func WaitNoReaper(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var busy bool
		if err := netns.Do(path, func() (err error) { busy, err = netlinkx.ReaperBusy(); return err }); err != nil {
			t.Fatal(err)
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a reaper is still at work after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Link reads a link in the namespace at path; nil when it is not there.
func Link(t *testing.T, path, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	if err := netns.Do(path, func() error {
		var err error
		l, err = netlink.LinkByName(name)
		if netlinkx.IsNotFound(err) {
			l, err = nil, nil
		}
		return err
	}); err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	return l
}

// WaitGone polls until the named links are gone from the namespace at
// path, for at most d; it returns those still there.
func WaitGone(t *testing.T, path string, d time.Duration, names ...string) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var left []string
		for _, n := range names {
			if Link(t, path, n) != nil {
				left = append(left, n)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AssertDetached checks that hostVeth is still in the namespace at path
// (a reaper was meant to wait), marked for reaping and down; it returns
// the link.
func AssertDetached(t *testing.T, path, hostVeth string) netlink.Link {
	t.Helper()
	l := Link(t, path, hostVeth)
	if l == nil {
		t.Fatalf("%s already gone: the reaper was meant to wait", hostVeth)
	}
	if !netlinkx.Marked(l) || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("%s after DEL: alias %q, flags %v; want marked and down", hostVeth, l.Attrs().Alias, l.Attrs().Flags)
	}
	return l
}

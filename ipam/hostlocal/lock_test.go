package hostlocal

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
)

// A lock held by a stuck process makes ADD fail with code 11 (try again
// later) after LockTimeout instead of hanging, and the lock is usable again
// once the holder lets go.
func TestLockTimeoutIsTryAgainLater(t *testing.T) {
	dir := t.TempDir()
	conf := netconf(t, dir, v4Ranges("10.3.0.0/29"), nil)
	netDir := filepath.Join(dir, testNet)
	if err := os.MkdirAll(netDir, 0o700); err != nil {
		t.Fatal(err)
	}
	holder, err := os.OpenFile(filepath.Join(netDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	old := LockTimeout
	LockTimeout = 200 * time.Millisecond
	defer func() { LockTimeout = old }()

	start := time.Now()
	_, err = Plugin.Add(cmdArgs("c1", "eth0", conf))
	wantErr(t, err, cnierr.TryAgainLater, "locked")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ADD waited %s", d)
	}
	holder.Close() // the stuck process dies
	if _, err := Plugin.Add(cmdArgs("c1", "eth0", conf)); err != nil {
		t.Fatalf("ADD after the lock was released: %v", err)
	}
}

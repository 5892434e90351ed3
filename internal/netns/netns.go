// Package netns runs code inside a network namespace safely and manages
// named namespaces (the /run/netns/NAME bind mounts that `ip netns` uses).
//
// Switching a namespace is per OS thread, so Do locks the goroutine to its
// thread for the whole closure and switches back afterwards. If switching back
// fails the thread is left locked, so the Go runtime discards it instead of
// reusing a thread that sits in the wrong namespace. Code that only needs
// netlink in another namespace should prefer a netlink handle opened there
// (netlink.NewHandleAt) and not switch threads at all.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where named network namespaces are bind-mounted.
const RunDir = "/run/netns"

// Do runs fn with the calling goroutine switched into the namespace at path.
// Goroutines started by fn do not inherit the namespace.
func Do(path string, fn func() error) error {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %q: %w", path, err)
	}
	defer h.Close()
	return DoHandle(h, fn)
}

// DoHandle is Do for an already opened namespace.
func DoHandle(h netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime will terminate it when the
		// goroutine exits rather than reuse it in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Path returns the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(RunDir, name) }

// Create makes a new named namespace without moving the caller into it.
// It fails if the name exists.
func Create(name string) (string, error) {
	if name == "" || filepath.Base(name) != name {
		return "", fmt.Errorf("invalid netns name %q", name)
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return "", err
	}
	p := Path(name)
	// The mount point must exist as a file before the bind mount.
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	f.Close()

	errc := make(chan error, 1)
	// A fresh goroutine so the caller's thread never moves. The thread is
	// switched back before it is unlocked; if that fails it stays locked and
	// the runtime discards it with the goroutine. (It must not exit locked
	// otherwise: if it happens to be the main thread the runtime parks it
	// forever, and the process keeps the new namespace alive.)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		merr := unix.Mount(src, p, "none", unix.MS_BIND, "")
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(merr, fmt.Errorf("restore netns: %w", err))
			return // still locked: the thread is discarded
		}
		runtime.UnlockOSThread()
		if merr != nil {
			merr = fmt.Errorf("bind mount %s: %w", p, merr)
		}
		errc <- merr
	}()
	if err := <-errc; err != nil {
		os.Remove(p)
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	return p, nil
}

// Delete unmounts and removes a named namespace. A missing one is not an
// error, so cleanup can always call it.
func Delete(name string) error {
	return DeletePath(Path(name))
}

// DeletePath is Delete for a full path.
func DeletePath(p string) error {
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Exists reports whether path names a network namespace.
func Exists(path string) bool {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return false
	}
	h.Close()
	return true
}

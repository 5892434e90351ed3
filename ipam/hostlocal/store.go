package hostlocal

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// On-disk format (docs/ipam-host-local.md): one directory per network,
// holding
//
//	lock                  empty file; flock(LOCK_EX) serialises every operation
//	<ip>                  a reservation: "containerID\r\nifname"
//	last_reserved_ip.<n>  the last address reserved in range set n
//	.tmp-*                in-flight files; only exist while their writer holds the lock
const (
	lockFile     = "lock"
	cursorPrefix = "last_reserved_ip."
	tmpPrefix    = ".tmp-"
	lineBreak    = "\r\n"
)

// stepHook, when set (tests only), is called between the steps of a
// reservation so a test can widen the windows in which a SIGKILL lands.
var stepHook func(step string)

func step(s string) {
	if stepHook != nil {
		stepHook(s)
	}
}

// Owner is the attachment a reservation belongs to. Legacy files written by
// very old reference plugins hold only the container ID (IfName "" and
// Legacy true).
type Owner struct {
	ContainerID string
	IfName      string
	Legacy      bool
}

func (o Owner) content() string { return o.ContainerID + lineBreak + o.IfName }

func parseOwner(b []byte) Owner {
	s := strings.TrimSpace(string(b))
	if id, ifn, ok := strings.Cut(s, lineBreak); ok {
		return Owner{ContainerID: strings.TrimSpace(id), IfName: strings.TrimSpace(ifn)}
	}
	return Owner{ContainerID: s, Legacy: true}
}

// matches reports whether a reservation owned by o belongs to want; legacy
// files match on the container ID alone.
func (o Owner) matches(want Owner) bool {
	if o.Legacy {
		return o.ContainerID != "" && o.ContainerID == want.ContainerID
	}
	return o.ContainerID == want.ContainerID && o.IfName == want.IfName
}

// Store is one network's reservation directory, locked for the lifetime of
// the value. Every method must be called between OpenStore and Close.
type Store struct {
	dir  string
	lock *os.File
	tmp  string // this operation's reservation temp file, if created
	tmpO Owner
}

// LockTimeout bounds the wait for another process's operation on the same
// network. Operations take milliseconds; a lock held this long belongs to a
// stuck process, and the runtime is told to try again (code 11) instead of
// hanging until its own timeout.
var LockTimeout = 20 * time.Second

// ErrLocked is returned by OpenStore when the lock was not granted within
// LockTimeout.
var ErrLocked = errors.New("reservation directory is locked by another operation")

// lockWithin takes f's exclusive flock, giving up after timeout. The
// blocking flock cannot be cancelled, so on timeout a goroutine stays to
// release the lock (by closing f) if it is granted later.
func lockWithin(f *os.File, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if err != unix.EINTR {
				done <- err
				return
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		return nil
	case <-t.C:
		go func() {
			<-done
			f.Close()
		}()
		return fmt.Errorf("%w: waited %s for %s", ErrLocked, timeout, f.Name())
	}
}

// ErrNoStore is returned by OpenStore(create=false) when the network has
// no directory yet.
var ErrNoStore = errors.New("no reservation directory")

// OpenStore locks dir (dataDir/network), creating it (0700) when create is
// set. Leftover temp files of crashed writers are removed: a writer only
// has temp files while it holds the lock, so any found now are orphans.
func OpenStore(dir string, create bool) (*Store, error) {
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoStore
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		if !create && errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNoStore
		}
		return nil, err
	}
	if err := lockWithin(f, LockTimeout); err != nil {
		return nil, err
	}
	step("locked")
	s := &Store{dir: dir, lock: f}
	if err := s.removeTemps(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close removes this operation's temp file and releases the lock.
func (s *Store) Close() error {
	var err error
	if s.tmp != "" {
		if e := os.Remove(s.tmp); e != nil && !errors.Is(e, fs.ErrNotExist) {
			err = e
		}
		s.tmp = ""
	}
	if s.lock != nil {
		// Closing the descriptor drops the flock.
		if e := s.lock.Close(); e != nil && err == nil {
			err = e
		}
		s.lock = nil
	}
	return err
}

func (s *Store) removeTemps() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

func (s *Store) path(a netip.Addr) string { return filepath.Join(s.dir, a.String()) }

// Entries returns every reservation in the directory.
func (s *Store) Entries() (map[netip.Addr]Owner, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]Owner, len(ents))
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[a] = parseOwner(b)
	}
	return out, nil
}

// Owner returns who holds a.
func (s *Store) Owner(a netip.Addr) (Owner, bool, error) {
	b, err := os.ReadFile(s.path(a))
	if errors.Is(err, fs.ErrNotExist) {
		return Owner{}, false, nil
	}
	if err != nil {
		return Owner{}, false, err
	}
	return parseOwner(b), true, nil
}

// writeTemp creates a fully written temp file holding o's content.
func (s *Store) writeTemp(prefix string, content []byte) (string, error) {
	f, err := os.CreateTemp(s.dir, prefix)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// Reserve claims a for o. The reservation file appears atomically, complete
// or not at all: the content is written to a temp file which is then
// hard-linked to the address's name (EEXIST: taken). One temp file serves
// every reservation of the operation and is removed by Close.
func (s *Store) Reserve(a netip.Addr, o Owner) (bool, error) {
	if s.tmp == "" || s.tmpO != o {
		if s.tmp != "" {
			os.Remove(s.tmp)
			s.tmp = ""
		}
		t, err := s.writeTemp(tmpPrefix+"res-", []byte(o.content()))
		if err != nil {
			return false, err
		}
		s.tmp, s.tmpO = t, o
		step("temp-written")
	}
	err := os.Link(s.tmp, s.path(a))
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	step("linked")
	return true, nil
}

// Release removes the reservation of a (absent is fine).
func (s *Store) Release(a netip.Addr) error {
	err := os.Remove(s.path(a))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	step("released")
	return nil
}

// ReleaseOwner removes every reservation of o and returns the addresses.
// Legacy (container-ID-only) files are released only when no file in the
// current format matched, as the reference plugin does.
func (s *Store) ReleaseOwner(o Owner) ([]netip.Addr, error) {
	ents, err := s.Entries()
	if err != nil {
		return nil, err
	}
	var exact, legacy []netip.Addr
	for a, ow := range ents {
		if !ow.matches(o) {
			continue
		}
		if ow.Legacy {
			legacy = append(legacy, a)
		} else {
			exact = append(exact, a)
		}
	}
	rel := exact
	if len(rel) == 0 {
		rel = legacy
	}
	var errs []error
	var done []netip.Addr
	for _, a := range rel {
		if err := s.Release(a); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, a)
	}
	return done, errors.Join(errs...)
}

// LastReserved returns the cursor of range set idx (zero Addr if none or
// unreadable: round-robin then restarts at the first range).
func (s *Store) LastReserved(idx int) netip.Addr {
	b, err := os.ReadFile(filepath.Join(s.dir, cursorPrefix+strconv.Itoa(idx)))
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// SetLastReserved atomically replaces the cursor of range set idx.
func (s *Store) SetLastReserved(idx int, a netip.Addr) error {
	t, err := s.writeTemp(tmpPrefix+"cur-", []byte(a.String()))
	if err != nil {
		return err
	}
	if err := os.Rename(t, filepath.Join(s.dir, cursorPrefix+strconv.Itoa(idx))); err != nil {
		os.Remove(t)
		return err
	}
	step("cursor")
	return nil
}

// Probe checks the directory is writable (STATUS).
func (s *Store) Probe() error {
	t, err := s.writeTemp(tmpPrefix+"probe-", []byte("probe"))
	if err != nil {
		return err
	}
	return os.Remove(t)
}

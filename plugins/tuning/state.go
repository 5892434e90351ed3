package tuning

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// On-disk format (docs/plugins/tuning.md): one directory per network under
// the data dir, mode 0700:
//
//	<dataDir>/<network>/lock                       empty; flock(LOCK_EX) around every operation
//	<dataDir>/<network>/<containerID>/<ifname>.json  the values before ADD changed them, 0600
//	<dataDir>/<network>/<containerID>/.tmp-*       in-flight writes (renamed into place)
//
// A directory per container keeps the key unambiguous: container IDs and
// interface names may both contain '-' and '_'.
const (
	lockName  = "lock"
	tmpPrefix = ".tmp-"
)

// savedSysctl is a sysctl's value before ADD wrote it.
type savedSysctl struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// savedLink holds the link attributes before ADD changed them; nil means
// ADD did not touch that attribute.
type savedLink struct {
	Mac      string `json:"mac,omitempty"`
	MTU      *int   `json:"mtu,omitempty"`
	Promisc  *bool  `json:"promisc,omitempty"`
	Allmulti *bool  `json:"allmulti,omitempty"`
	TxQLen   *int   `json:"txQLen,omitempty"`
}

func (l *savedLink) empty() bool {
	return l == nil || (l.Mac == "" && l.MTU == nil && l.Promisc == nil && l.Allmulti == nil && l.TxQLen == nil)
}

// state is one attachment's file.
type state struct {
	ContainerID string        `json:"containerID"`
	IfName      string        `json:"ifname"`
	Sysctls     []savedSysctl `json:"sysctls,omitempty"`
	Link        *savedLink    `json:"link,omitempty"`
}

// merge adds to s the originals in n that s does not already hold: after a
// repeated ADD the oldest value is the one to restore.
func (s *state) merge(n *state) {
	have := map[string]bool{}
	for _, v := range s.Sysctls {
		have[v.Key] = true
	}
	for _, v := range n.Sysctls {
		if !have[v.Key] {
			s.Sysctls = append(s.Sysctls, v)
		}
	}
	if n.Link == nil {
		return
	}
	if s.Link == nil {
		s.Link = &savedLink{}
	}
	if s.Link.Mac == "" {
		s.Link.Mac = n.Link.Mac
	}
	if s.Link.MTU == nil {
		s.Link.MTU = n.Link.MTU
	}
	if s.Link.Promisc == nil {
		s.Link.Promisc = n.Link.Promisc
	}
	if s.Link.Allmulti == nil {
		s.Link.Allmulti = n.Link.Allmulti
	}
	if s.Link.TxQLen == nil {
		s.Link.TxQLen = n.Link.TxQLen
	}
}

// store is one network's state directory, locked while open.
type store struct {
	dir  string
	lock *os.File
}

// netDir is the network's directory; an unnamed network uses "_".
func netDir(dataDir, network string) string {
	if network == "" {
		network = "_"
	}
	return filepath.Join(dataDir, network)
}

// openStore locks the network's directory, creating it when create is
// set. Without create a missing directory gives (nil, nil).
func openStore(dataDir, network string, create bool) (*store, error) {
	dir := netDir(dataDir, network)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
	} else if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return &store{dir: dir, lock: f}, nil
}

// Close releases the lock.
func (s *store) Close() error {
	if s == nil {
		return nil
	}
	return s.lock.Close() // closing the last descriptor drops the flock
}

func (s *store) path(containerID, ifName string) string {
	return filepath.Join(s.dir, containerID, ifName+".json")
}

// load returns the attachment's state, or nil when there is none. A file
// that does not parse is reported, not ignored: it holds values someone
// expects to get back.
func (s *store) load(containerID, ifName string) (*state, error) {
	b, err := os.ReadFile(s.path(containerID, ifName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt: %w", s.path(containerID, ifName), err)
	}
	return st, nil
}

// save writes the attachment's state atomically: a temp file in the same
// directory, fsync, rename, fsync of the directory.
func (s *store) save(st *state) error {
	dir := filepath.Join(s.dir, st.ContainerID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(append(b, '\n'))
	if werr == nil {
		werr = f.Chmod(0o600)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, s.path(st.ContainerID, st.IfName))
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state %s: %w", s.path(st.ContainerID, st.IfName), werr)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// remove deletes the attachment's state and its container directory when
// that is left empty. A missing file is not an error.
func (s *store) remove(containerID, ifName string) error {
	if err := os.Remove(s.path(containerID, ifName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.removeDirIfEmpty(filepath.Join(s.dir, containerID))
	return nil
}

func (s *store) removeDirIfEmpty(dir string) {
	// rmdir fails on a non-empty directory, which is what we want.
	_ = unix.Rmdir(dir)
}

// gc removes the state of every attachment not in valid, and temp files
// (writers hold the lock, so under the lock any temp file is a leftover of
// a crash). It returns what it removed as "containerID/ifname".
func (s *store) gc(valid map[[2]string]bool) ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, ce := range ents {
		if !ce.IsDir() {
			continue
		}
		cid := ce.Name()
		cdir := filepath.Join(s.dir, cid)
		files, err := os.ReadDir(cdir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, fe := range files {
			fn := fe.Name()
			p := filepath.Join(cdir, fn)
			if strings.HasPrefix(fn, tmpPrefix) {
				_ = os.Remove(p)
				continue
			}
			ifn, ok := strings.CutSuffix(fn, ".json")
			if !ok || valid[[2]string{cid, ifn}] {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, cid+"/"+ifn)
		}
		s.removeDirIfEmpty(cdir)
	}
	return removed, errors.Join(errs...)
}
